// CPU emulation (tests/gpu/emu): stands in for <cublas_v2.h>
#include "cuda_emu.h"
