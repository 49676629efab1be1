// OpenCL 1.2 API surface: the lowest common version of AMD, Intel, NVIDIA, Apple and PoCL drivers.
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <CL/cl_ext.h>
