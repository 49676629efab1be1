// oneDNN's C API declarations (Debian libdnnl-dev). The library is not linked: HostGemm opens it
// with dlopen after choosing the OpenMP settings libgomp reads when it loads, so only the header's
// types and enums are used from here.
#include <oneapi/dnnl/dnnl.h>
