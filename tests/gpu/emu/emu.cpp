// The fiber scheduler of cuda_emu.h: a launch runs its blocks one after
// another; in a block every CUDA thread is a fiber, run until it finishes or
// waits at a barrier (__syncthreads for the block, a shuffle for its warp),
// and a barrier opens once every live fiber of its scope waits there.
//
// Speed: fibers live as long as the program (one per thread index, reused by
// every block and launch), and on x86-64 a switch is a few instructions
// (emu_switch below: the callee-saved registers and the stack pointer), not
// swapcontext's two system calls. A launch whose first block met no barrier
// runs its other blocks' threads as plain calls, one after another; a barrier
// met there after all stops the program with a message, never a wrong result.
#include "cuda_emu.h"
uint3e threadIdx, blockIdx;
dim3 blockDim, gridDim;
float smem[1 << 20];
namespace {
enum { RUNNABLE = 0, AT_WARP = 1, AT_BLOCK = 2, DONE = 3 };
const size_t STACK = 256 * 1024;
struct Fiber { void *sp; int state; std::vector<char> stack; };
std::vector<Fiber> fibers;
int cur, nthreads;
void *sched_sp;
void (*g_body)(void *);
void *g_arg;
unsigned char xbuf[1024][16];
int direct, barrier_seen;
}

#if defined(__x86_64__)
// emu_switch(&save_sp, next_sp): pushes the callee-saved registers, saves the
// stack pointer, loads the other's and pops its registers (SysV ABI: the
// rest are caller-saved, so the compiler keeps nothing else live across it).
extern "C" void emu_switch(void **save_sp, void *next_sp);
asm(".text\n"
    ".globl emu_switch\n"
    ".type emu_switch,@function\n"
    "emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emu_switch, .-emu_switch\n");

namespace {
[[noreturn]] void fiber_entry() {
    for (;;) {
        g_body(g_arg);
        fibers[cur].state = DONE;
        emu_switch(&fibers[cur].sp, sched_sp);
    }
}
void fiber_init(Fiber &f) {
    f.stack.resize(STACK);
    uintptr_t top = ((uintptr_t)f.stack.data() + STACK) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;                        // fiber_entry's (never used) return address
    *--sp = (void *)fiber_entry;            // where emu_switch's ret lands first
    for (int r = 0; r < 6; r++) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    f.sp = sp;
}
inline void to_fiber(int i) { emu_switch(&sched_sp, fibers[i].sp); }
inline void to_sched() { emu_switch(&fibers[cur].sp, sched_sp); }
}
#else
// elsewhere: ucontext (correct, slower); a fiber starts afresh each block
namespace {
ucontext_t sched_ctx;
std::vector<ucontext_t> ctx;
void fiber_main() {
    g_body(g_arg);
    fibers[cur].state = DONE;
    swapcontext(&ctx[cur], &sched_ctx);
}
void fiber_init(Fiber &f) { f.stack.resize(STACK); }
void fiber_restart(int i) {
    getcontext(&ctx[i]);
    ctx[i].uc_stack.ss_sp = fibers[i].stack.data();
    ctx[i].uc_stack.ss_size = STACK;
    ctx[i].uc_link = &sched_ctx;
    makecontext(&ctx[i], fiber_main, 0);
}
inline void to_fiber(int i) { swapcontext(&sched_ctx, &ctx[i]); }
inline void to_sched() { swapcontext(&ctx[cur], &sched_ctx); }
}
#endif

void emu_barrier(int warp_scope) {
    if (direct) {
        fprintf(stderr, "emu: a barrier in block %u of a launch whose block 0 met none; "
                        "the emulator cannot run this kernel's blocks as plain calls\n", blockIdx.x);
        abort();
    }
    barrier_seen = 1;
    fibers[cur].state = warp_scope ? AT_WARP : AT_BLOCK;
    to_sched();
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
    const size_t had = fibers.size();
    if ((int)had < nthreads) {
        fibers.resize(nthreads);
#if !defined(__x86_64__)
        ctx.resize(nthreads);
#endif
        for (size_t i = had; i < fibers.size(); i++) fiber_init(fibers[i]);
    }
    barrier_seen = 0;
    direct = 0;
    for (unsigned bz = 0; bz < g.z; bz++)
    for (unsigned by = 0; by < g.y; by++)
    for (unsigned bx = 0; bx < g.x; bx++) {
        blockIdx = {bx, by, bz};
        if (bx + by + bz > 0 && !barrier_seen) {
            direct = 1;
            for (int i = 0; i < nthreads; i++) {
                cur = i; threadIdx = {(unsigned)i, 0, 0};
                body(arg);
            }
            continue;
        }
        for (int i = 0; i < nthreads; i++) {
            fibers[i].state = RUNNABLE;
#if !defined(__x86_64__)
            fiber_restart(i);
#endif
        }
        for (;;) {
            int ran = 0, done = 0;
            for (int i = 0; i < nthreads; i++) {
                if (fibers[i].state != RUNNABLE) continue;
                cur = i; threadIdx = {(unsigned)i, 0, 0};
                to_fiber(i);
                ran++;
            }
            // releases: a warp whose live fibers all wait at a warp barrier, the block likewise
            int live = 0, at_block = 0;
            for (int w = 0; w < nthreads; w += 32) {
                int wl = 0, ww = 0;
                for (int i = w; i < w + 32 && i < nthreads; i++) {
                    if (fibers[i].state == DONE) continue;
                    wl++; live++;
                    if (fibers[i].state == AT_WARP) ww++;
                    if (fibers[i].state == AT_BLOCK) at_block++;
                }
                if (wl && ww == wl)
                    for (int i = w; i < w + 32 && i < nthreads; i++) if (fibers[i].state == AT_WARP) fibers[i].state = RUNNABLE;
            }
            if (live && at_block == live)
                for (int i = 0; i < nthreads; i++) if (fibers[i].state == AT_BLOCK) fibers[i].state = RUNNABLE;
            for (int i = 0; i < nthreads; i++) done += fibers[i].state == DONE;
            if (done == nthreads) break;
            int runnable = 0;
            for (int i = 0; i < nthreads; i++) runnable += fibers[i].state == RUNNABLE;
            if (!runnable) { fprintf(stderr, "emu: deadlock (ran %d)\n", ran); abort(); }
        }
    }
    direct = 0;
}
