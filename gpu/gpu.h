/* gpu.h - plain-C face of the GPU backends (cuda, cublas); no CUDA types here */
#ifndef SS_GPU_H
#define SS_GPU_H

#include "engine/kernels.h"

/* Always defined: by gpu/*.cu when the toolkit was found at build time, else
 * by gpu/gpu_none.c, where both report themselves unavailable with a reason. */
extern const ss_backend ss_backend_cuda;
extern const ss_backend ss_backend_cublas;

#endif
