/*
 * CUDA backend, device discovery. Built only when CMake finds nvcc
 * (-DFPTQ_CUDA=AUTO|ON); the ops themselves arrive with the CUDA issue.
 */
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int fptq_cuda_device_count(char *why, size_t why_cap)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        snprintf(why, why_cap, "no usable CUDA device (%s: %s)", cudaGetErrorName(err),
                 cudaGetErrorString(err));
        return 0;
    }
    if (n == 0)
        snprintf(why, why_cap, "no CUDA device found");
    return n;
}
