/* register.c - puts the cuda and cublas backends into the engine's registry */
#include "gpu/gpu.h"

#include "util/error.h"

int ss_gpu_register(void) {
    int rc = ss_backend_register(&ss_backend_cuda);
    return rc ? rc : ss_backend_register(&ss_backend_cublas);
}
