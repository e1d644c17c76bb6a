// The fiber scheduler of cuda_emu.h: a launch runs its blocks one after
// another; in a block every CUDA thread is a fiber, run until it finishes or
// waits at a barrier (__syncthreads for the block, a shuffle for its warp),
// and a barrier opens once every live fiber of its scope waits there.
#include "cuda_emu.h"
uint3e threadIdx, blockIdx;
dim3 blockDim, gridDim;
float smem[1 << 20];
namespace {
struct Fiber { ucontext_t ctx; int state; std::vector<char> stack; };
std::vector<Fiber> fibers;
int cur, nthreads;
ucontext_t sched;
void (*g_body)(void *);
void *g_arg;
unsigned char xbuf[1024][16];
void fiber_main() {
    g_body(g_arg);
    fibers[cur].state = 3;
    swapcontext(&fibers[cur].ctx, &sched);
}
}
void emu_barrier(int warp_scope) {
    fibers[cur].state = warp_scope ? 1 : 2;
    swapcontext(&fibers[cur].ctx, &sched);
}
void emu_exchange(const void *v, size_t bytes, int src_lane, void *out) {
    const int t = (int)threadIdx.x;
    memcpy(xbuf[t], v, bytes);
    emu_barrier(1);
    const int src = src_lane >= 0 && src_lane < 32 ? (t & ~31) + src_lane : t;
    memcpy(out, xbuf[src < nthreads ? src : t], bytes);
    emu_barrier(1);
}
void emu_run(dim3 g, dim3 b, void (*body)(void *), void *arg) {
    gridDim = g; blockDim = b;
    nthreads = (int)(b.x * b.y * b.z);
    if (b.y != 1 || b.z != 1 || nthreads > 1024) { fprintf(stderr, "emu: block shape\n"); abort(); }
    g_body = body; g_arg = arg;
    if ((int)fibers.size() < nthreads) fibers.resize(nthreads);
    for (auto &f : fibers) if (f.stack.empty()) f.stack.resize(256 * 1024);
    for (unsigned bz = 0; bz < g.z; bz++)
    for (unsigned by = 0; by < g.y; by++)
    for (unsigned bx = 0; bx < g.x; bx++) {
        blockIdx = {bx, by, bz};
        for (int i = 0; i < nthreads; i++) {
            Fiber &f = fibers[i];
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack.data();
            f.ctx.uc_stack.ss_size = f.stack.size();
            f.ctx.uc_link = &sched;
            makecontext(&f.ctx, fiber_main, 0);
            f.state = 0;
        }
        for (;;) {
            int ran = 0, done = 0;
            for (int i = 0; i < nthreads; i++) {
                if (fibers[i].state != 0) continue;
                cur = i; threadIdx = {(unsigned)i, 0, 0};
                swapcontext(&sched, &fibers[i].ctx);
                ran++;
            }
            // releases: a warp whose live fibers all wait at a warp barrier, the block likewise
            int live = 0, at_block = 0;
            for (int w = 0; w < nthreads; w += 32) {
                int wl = 0, ww = 0;
                for (int i = w; i < w + 32 && i < nthreads; i++) {
                    if (fibers[i].state == 3) continue;
                    wl++; live++;
                    if (fibers[i].state == 1) ww++;
                    if (fibers[i].state == 2) at_block++;
                }
                if (wl && ww == wl)
                    for (int i = w; i < w + 32 && i < nthreads; i++) if (fibers[i].state == 1) fibers[i].state = 0;
            }
            if (live && at_block == live)
                for (int i = 0; i < nthreads; i++) if (fibers[i].state == 2) fibers[i].state = 0;
            for (int i = 0; i < nthreads; i++) done += fibers[i].state == 3;
            if (done == nthreads) break;
            int runnable = 0;
            for (int i = 0; i < nthreads; i++) runnable += fibers[i].state == 0;
            if (!runnable) { fprintf(stderr, "emu: deadlock (ran %d)\n", ran); abort(); }
        }
    }
}
