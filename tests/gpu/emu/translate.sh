#!/bin/sh
# kernels/cuda/X.cu -> C++ for the CPU emulation of CUDA (cuda_emu.h): a
# kernel launch k<<<g, b, smem, stream>>>(args) becomes a call of the
# emulator's launcher, emu_make_launcher(k, g, b, smem, stream)(args), and
# dynamic shared memory a global array of emu.cpp.
#   translate.sh IN.cu OUT.cpp
set -eu
perl -0pe 's/(\b[A-Za-z_]\w*(?:<\w+>)?)<<</emu_make_launcher($1, /g; s/>>>\(/)(/g; s/extern __shared__/extern/g' "$1" >"$2.tmp"
mv "$2.tmp" "$2"
