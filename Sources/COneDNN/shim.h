// oneDNN's C API (Debian libdnnl-dev): dnnl_sgemm, and the instruction set it dispatched to.
#include <oneapi/dnnl/dnnl.h>
