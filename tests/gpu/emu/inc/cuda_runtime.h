// CPU emulation (tests/gpu/emu): stands in for <cuda_runtime.h>
#include "cuda_emu.h"
