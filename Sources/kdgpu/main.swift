import OpenCLBackend
import CPUBackend
let devs = try OpenCLPlatforms.devices()
print(devs.map(\.name))
