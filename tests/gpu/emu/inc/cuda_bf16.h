// CPU emulation (tests/gpu/emu): stands in for <cuda_bf16.h>
#include "cuda_emu.h"
