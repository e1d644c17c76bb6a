// CPU emulation (tests/gpu/emu): stands in for <cusolverDn.h>
#include "cuda_emu.h"
