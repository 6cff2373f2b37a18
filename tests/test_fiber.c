/* SPDX-License-Identifier: MIT */
/*
 * Fibers (lib/fiber.c): the context switch, the stack cache, migration between
 * threads, the guard page. Runs under Criterion, the plain harness (TSan, and the
 * aarch64 cross build of tests/cross/aarch64.sh) and Valgrind.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <stdatomic.h>

#ifndef WEFT_HAVE_FIBERS

Test(fiber, unsupported)
{
    cr_skip_test("no fibers on this CPU");
}

#else

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fiber.h"

#define STACK (256 * 1024)

/* ------------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------------- */

/* The permissions ("rw-p", "---p") of the mapping holding addr; 0 if unmapped. */
static int map_perms(const void *addr, char perms[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[512];
    int found = 0;
    uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) != 3)
            continue;
        if (a >= lo && a < hi) {
            memcpy(perms, p, 5);
            found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}

/* Floating-point rounding control of this thread: x86-64 both MXCSR and the x87
 * control word (the ABI makes both callee-saved), aarch64 FPCR. Through asm, not
 * fenv.h, so the test needs no libm. mode: 0 nearest, 1 down, 2 up, 3 zero. */
#if defined(__x86_64__)
static void fp_set_round(unsigned mode)
{
    static const unsigned rc[4] = {0, 1, 2, 3};     /* same encoding in both */
    unsigned csr;
    unsigned short cw;
    __asm__ volatile("stmxcsr %0" : "=m"(csr));
    csr = (csr & ~0x6000u) | rc[mode] << 13;
    __asm__ volatile("ldmxcsr %0" : : "m"(csr));
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    cw = (unsigned short)((cw & ~0xc00u) | rc[mode] << 10);
    __asm__ volatile("fldcw %0" : : "m"(cw));
}

/* Both units' modes, as mxcsr_mode | x87_mode << 4. */
static unsigned fp_get_round(void)
{
    unsigned csr;
    unsigned short cw;
    __asm__ volatile("stmxcsr %0" : "=m"(csr));
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    return ((csr >> 13) & 3) | ((cw >> 10) & 3u) << 4;
}
#define FP_MODE(m) ((m) | (m) << 4)
#elif defined(__aarch64__)
/* FPCR.RMode (bits 22-23): 0 nearest, 1 towards +inf, 2 towards -inf, 3 zero. */
static const unsigned arm_rmode[4] = {0, 2, 1, 3};
static void fp_set_round(unsigned mode)
{
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    fpcr = (fpcr & ~(3ull << 22)) | (uint64_t)arm_rmode[mode] << 22;
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr));
}

static unsigned fp_get_round(void)
{
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    unsigned r = (fpcr >> 22) & 3;
    for (unsigned m = 0; m < 4; m++)
        if (arm_rmode[m] == r)
            return m;
    return 99;
}
#define FP_MODE(m) (m)
#endif

/*
 * weft_test_regs_roundtrip(from, to, seed): load a pattern derived from seed into
 * every callee-saved register (x86-64: rbx, rbp, r12-r15; aarch64: x19-x29 and
 * d8-d15), call weft__fiber_switch(from, to, NULL), and when it returns compare
 * them all. Returns a bitmask of the registers that changed (0: all preserved).
 * Itself follows the ABI: saves and restores what it uses.
 */
unsigned weft_test_regs_roundtrip(struct weft__fiber *from, struct weft__fiber *to,
                                  unsigned long seed);
#if defined(__x86_64__)
__asm__(
    "   .text\n"
    "   .globl  weft_test_regs_roundtrip\n"
    "   .hidden weft_test_regs_roundtrip\n"
    "   .type   weft_test_regs_roundtrip, @function\n"
    "   .p2align 4\n"
    "weft_test_regs_roundtrip:\n"
    "   pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
    "   subq  $24, %rsp\n"                  /* 16-byte aligned for the call */
    "   movq  %rdx, (%rsp)\n"               /* seed */
    "   movabsq $0x0101010101010101, %rax\n"
    "   imulq %rdx, %rax\n"
    "   leaq  1(%rax), %rbx\n leaq 2(%rax), %rbp\n leaq 3(%rax), %r12\n"
    "   leaq  4(%rax), %r13\n leaq 5(%rax), %r14\n leaq 6(%rax), %r15\n"
    "   xorl  %edx, %edx\n"                 /* msg = NULL */
    "   call  weft__fiber_switch\n"
    "   movq  (%rsp), %rdx\n"
    "   movabsq $0x0101010101010101, %rax\n"
    "   imulq %rdx, %rax\n"
    "   xorl  %edx, %edx\n"
    "   leaq 1(%rax), %rcx\n cmpq %rcx, %rbx\n je 1f\n orl $1, %edx\n1:\n"
    "   leaq 2(%rax), %rcx\n cmpq %rcx, %rbp\n je 1f\n orl $2, %edx\n1:\n"
    "   leaq 3(%rax), %rcx\n cmpq %rcx, %r12\n je 1f\n orl $4, %edx\n1:\n"
    "   leaq 4(%rax), %rcx\n cmpq %rcx, %r13\n je 1f\n orl $8, %edx\n1:\n"
    "   leaq 5(%rax), %rcx\n cmpq %rcx, %r14\n je 1f\n orl $16, %edx\n1:\n"
    "   leaq 6(%rax), %rcx\n cmpq %rcx, %r15\n je 1f\n orl $32, %edx\n1:\n"
    "   movl  %edx, %eax\n"
    "   addq  $24, %rsp\n"
    "   popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n"
    "   ret\n"
    "   .size weft_test_regs_roundtrip, .-weft_test_regs_roundtrip\n");
#elif defined(__aarch64__)
#define CHECK_X(reg, k)                                                               \
    "   add x10, x9, #" #k "\n cmp " #reg ", x10\n b.eq 1f\n orr w0, w0, #(1 << " #k ")\n1:\n"
#define CHECK_D(reg, k)                                                               \
    "   add x10, x9, #" #k "\n fmov x11, " #reg "\n cmp x11, x10\n b.eq 1f\n"         \
    "   orr w0, w0, #(1 << " #k ")\n1:\n"
#define LOAD_D(reg, k) "   add x10, x9, #" #k "\n fmov " #reg ", x10\n"
__asm__(
    "   .text\n"
    "   .globl  weft_test_regs_roundtrip\n"
    "   .hidden weft_test_regs_roundtrip\n"
    "   .type   weft_test_regs_roundtrip, %function\n"
    "   .p2align 4\n"
    "weft_test_regs_roundtrip:\n"
    "   stp x29, x30, [sp, #-176]!\n"
    "   mov x29, sp\n"
    "   stp x19, x20, [sp, #16]\n stp x21, x22, [sp, #32]\n stp x23, x24, [sp, #48]\n"
    "   stp x25, x26, [sp, #64]\n stp x27, x28, [sp, #80]\n"
    "   stp d8, d9, [sp, #96]\n stp d10, d11, [sp, #112]\n"
    "   stp d12, d13, [sp, #128]\n stp d14, d15, [sp, #144]\n"
    "   str x2, [sp, #160]\n"
    "   mov x9, #0x0101010101010101\n"
    "   mul x9, x9, x2\n"
    "   add x19, x9, #1\n add x20, x9, #2\n add x21, x9, #3\n add x22, x9, #4\n"
    "   add x23, x9, #5\n add x24, x9, #6\n add x25, x9, #7\n add x26, x9, #8\n"
    "   add x27, x9, #9\n add x28, x9, #10\n"
    LOAD_D(d8, 12) LOAD_D(d9, 13) LOAD_D(d10, 14) LOAD_D(d11, 15)
    LOAD_D(d12, 16) LOAD_D(d13, 17) LOAD_D(d14, 18) LOAD_D(d15, 19)
    "   add x29, x9, #11\n"                 /* the frame pointer too */
    "   mov x2, xzr\n"                      /* msg = NULL */
    "   bl  weft__fiber_switch\n"
    "   ldr x2, [sp, #160]\n"
    "   mov x9, #0x0101010101010101\n"
    "   mul x9, x9, x2\n"
    "   mov w0, #0\n"
    CHECK_X(x19, 1) CHECK_X(x20, 2) CHECK_X(x21, 3) CHECK_X(x22, 4) CHECK_X(x23, 5)
    CHECK_X(x24, 6) CHECK_X(x25, 7) CHECK_X(x26, 8) CHECK_X(x27, 9) CHECK_X(x28, 10)
    CHECK_X(x29, 11)
    CHECK_D(d8, 12) CHECK_D(d9, 13) CHECK_D(d10, 14) CHECK_D(d11, 15)
    CHECK_D(d12, 16) CHECK_D(d13, 17) CHECK_D(d14, 18) CHECK_D(d15, 19)
    "   ldp x19, x20, [sp, #16]\n ldp x21, x22, [sp, #32]\n ldp x23, x24, [sp, #48]\n"
    "   ldp x25, x26, [sp, #64]\n ldp x27, x28, [sp, #80]\n"
    "   ldp d8, d9, [sp, #96]\n ldp d10, d11, [sp, #112]\n"
    "   ldp d12, d13, [sp, #128]\n ldp d14, d15, [sp, #144]\n"
    "   ldp x29, x30, [sp], #176\n"
    "   ret\n"
    "   .size weft_test_regs_roundtrip, .-weft_test_regs_roundtrip\n");
#endif

/* ------------------------------------------------------------------------------
 * Ping-pong
 * ---------------------------------------------------------------------------- */

struct pingpong {
    struct weft__fiber *main, *a, *b;
    long n, count, bad;
};

/* b answers a's i with i + 1, n times; the n-th answer is its exit. */
static void pp_b(void *arg, void *msg)
{
    struct pingpong *p = arg;
    uintptr_t m = (uintptr_t)msg;
    for (long k = 0;; k++) {
        p->count++;
        if (m != (uintptr_t)k)
            p->bad++;
        if (k == p->n - 1)
            weft__fiber_exit(p->b, p->a, (void *)(m + 1));
        m = (uintptr_t)weft__fiber_switch(p->b, p->a, (void *)(m + 1));
    }
}

static void pp_a(void *arg, void *msg)
{
    struct pingpong *p = arg;
    if (msg != p)
        p->bad++;
    for (long i = 0; i < p->n; i++) {
        uintptr_t r = (uintptr_t)weft__fiber_switch(p->a, p->b, (void *)(uintptr_t)i);
        if (r != (uintptr_t)i + 1)
            p->bad++;
    }
    /* b has exited: its stack can go back to the cache from here. */
    weft__fiber_destroy(p->b);
    weft__fiber_exit(p->a, p->main, p->a);
}

Test(fiber, pingpong)
{
    struct weft__stack_cache c;
    cr_assert_eq(weft__stack_cache_init(&c, 0, 0), 0);
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    struct pingpong p = {.main = &self, .n = SCALED(1000000)};
    cr_assert_eq(weft__fiber_create(&c, &p.a, pp_a, &p), 0);
    cr_assert_eq(weft__fiber_create(&c, &p.b, pp_b, &p), 0);
    void *r = weft__fiber_switch(&self, p.a, &p);
    cr_assert_eq(r, (void *)p.a, "the exit message names the fiber that exited");
    weft__fiber_destroy(p.a);
    cr_assert_eq(p.count, p.n);
    cr_assert_eq(p.bad, 0);
    cr_assert_eq(weft__stack_cache_total(&c), 2);
    cr_assert_eq(weft__stack_cache_nfree(&c), 2);
    weft__stack_cache_destroy(&c);
}

/* ------------------------------------------------------------------------------
 * Registers and floating-point control across switches
 * ---------------------------------------------------------------------------- */

struct regs {
    struct weft__fiber *main, *f;
    unsigned rounds, bad_mask;
};

static void regs_fn(void *arg, void *msg)
{
    struct regs *r = arg;
    (void)msg;
    for (unsigned k = 0; k < r->rounds; k++)
        r->bad_mask |= weft_test_regs_roundtrip(r->f, r->main, 0x70 + k);
    weft__fiber_exit(r->f, r->main, NULL);
}

Test(fiber, callee_saved_registers)
{
    struct weft__stack_cache c;
    cr_assert_eq(weft__stack_cache_init(&c, 0, 0), 0);
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    struct regs r = {.main = &self, .rounds = 50};
    cr_assert_eq(weft__fiber_create(&c, &r.f, regs_fn, &r), 0);
    unsigned mask = 0;
    /* The first switch starts the fiber; each later one returns into its helper. */
    for (unsigned k = 0; k <= r.rounds; k++)
        mask |= weft_test_regs_roundtrip(&self, r.f, 0x10 + k);
    cr_assert_eq(mask, 0, "registers changed by the switch: mask %#x", mask);
    cr_assert_eq(r.bad_mask, 0, "registers changed in the fiber: mask %#x", r.bad_mask);
    weft__fiber_destroy(r.f);
    weft__stack_cache_destroy(&c);
}

/* The same from C: values the compiler keeps live across the call, in callee-saved
 * registers and on the stack (12 integers, 8 doubles: more than the registers). */
static volatile long lseed[12];
static volatile double dseed[8];

static void churn_fn(void *arg, void *msg)
{
    struct regs *r = arg;
    (void)msg;
    for (;;) {
        /* Use many registers here too, so the fiber's values replace main's. */
        long x[12];
        double d[8];
        for (int i = 0; i < 12; i++)
            x[i] = lseed[i] * 7 + i;
        for (int i = 0; i < 8; i++)
            d[i] = dseed[i] * 3.5 - i;
        weft__fiber_switch(r->f, r->main, NULL);
        for (int i = 0; i < 12; i++)
            if (x[i] != lseed[i] * 7 + i)
                r->bad_mask |= 1;
        for (int i = 0; i < 8; i++)
            if (d[i] != dseed[i] * 3.5 - i)
                r->bad_mask |= 2;
    }
}

Test(fiber, live_values_across_switch)
{
    for (int i = 0; i < 12; i++)
        lseed[i] = 1000003L * (i + 1);
    for (int i = 0; i < 8; i++)
        dseed[i] = 1.25 * (i + 1);
    struct weft__stack_cache c;
    cr_assert_eq(weft__stack_cache_init(&c, 0, 0), 0);
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    struct regs r = {.main = &self};
    cr_assert_eq(weft__fiber_create(&c, &r.f, churn_fn, &r), 0);
    for (int round = 0; round < 100; round++) {
        long a = lseed[0] + round, b = lseed[1] ^ round, cc = lseed[2] * 3, d = lseed[3] - 1;
        long e = lseed[4] + 5, f = lseed[5] * 9, g = lseed[6] ^ 0x55, h = lseed[7] + round * 2;
        long i = lseed[8] - 7, j = lseed[9] + 11, k = lseed[10] * 13, l = lseed[11] ^ 0xaa;
        double x0 = dseed[0] * 2, x1 = dseed[1] + 0.5, x2 = dseed[2] - 0.25, x3 = dseed[3] / 2;
        double x4 = dseed[4] * 3, x5 = dseed[5] + round, x6 = dseed[6] - 1, x7 = dseed[7] * 0.5;
        weft__fiber_switch(&self, r.f, NULL);
        cr_assert_eq(a, lseed[0] + round);
        cr_assert_eq(b, lseed[1] ^ round);
        cr_assert_eq(cc, lseed[2] * 3);
        cr_assert_eq(d, lseed[3] - 1);
        cr_assert_eq(e, lseed[4] + 5);
        cr_assert_eq(f, lseed[5] * 9);
        cr_assert_eq(g, lseed[6] ^ 0x55);
        cr_assert_eq(h, lseed[7] + round * 2);
        cr_assert_eq(i, lseed[8] - 7);
        cr_assert_eq(j, lseed[9] + 11);
        cr_assert_eq(k, lseed[10] * 13);
        cr_assert_eq(l, lseed[11] ^ 0xaa);
        cr_assert(x0 == dseed[0] * 2 && x1 == dseed[1] + 0.5 && x2 == dseed[2] - 0.25 &&
                  x3 == dseed[3] / 2 && x4 == dseed[4] * 3 && x5 == dseed[5] + round &&
                  x6 == dseed[6] - 1 && x7 == dseed[7] * 0.5, "a double changed");
    }
    cr_assert_eq(r.bad_mask, 0);
    weft__fiber_destroy(r.f);   /* suspended: dropped without unwinding */
    weft__stack_cache_destroy(&c);
}

struct fpenv {
    struct weft__fiber *main, *f;
    unsigned seen[3];
};

static void fpenv_fn(void *arg, void *msg)
{
    struct fpenv *e = arg;
    (void)msg;
    e->seen[0] = fp_get_round();        /* inherited from the creator */
    fp_set_round(1);                    /* down */
    weft__fiber_switch(e->f, e->main, NULL);
    e->seen[1] = fp_get_round();        /* still down, whatever main did */
    fp_set_round(3);                    /* towards zero */
    weft__fiber_switch(e->f, e->main, NULL);
    e->seen[2] = fp_get_round();
    weft__fiber_exit(e->f, e->main, NULL);
}

Test(fiber, fp_control_per_fiber)
{
    struct weft__stack_cache c;
    cr_assert_eq(weft__stack_cache_init(&c, 0, 0), 0);
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    struct fpenv e = {.main = &self};
    fp_set_round(0);
    cr_assert_eq(weft__fiber_create(&c, &e.f, fpenv_fn, &e), 0);
    fp_set_round(2);                    /* up: after creation, not inherited */
    weft__fiber_switch(&self, e.f, NULL);
    unsigned back1 = fp_get_round();
    fp_set_round(0);
    weft__fiber_switch(&self, e.f, NULL);
    unsigned back2 = fp_get_round();
    weft__fiber_switch(&self, e.f, NULL);
    unsigned back3 = fp_get_round();
    fp_set_round(0);
    weft__fiber_destroy(e.f);
    weft__stack_cache_destroy(&c);
    cr_assert_eq(e.seen[0], FP_MODE(0));
    cr_assert_eq(back1, FP_MODE(2));
    cr_assert_eq(e.seen[1], FP_MODE(1));
    cr_assert_eq(back2, FP_MODE(0));
    cr_assert_eq(e.seen[2], FP_MODE(3));
    cr_assert_eq(back3, FP_MODE(0));
}

/* ------------------------------------------------------------------------------
 * Stack depth and the guard page
 * ---------------------------------------------------------------------------- */

struct deep {
    struct weft__fiber *main, *f;
    uintptr_t stop_at;      /* recurse until the frame is below this address */
    uintptr_t lowest;
    long depth;
};

static __attribute__((noinline)) long recurse(struct deep *d, long depth)
{
    volatile char buf[1024];
    for (size_t i = 0; i < sizeof(buf); i += 64)
        buf[i] = (char)depth;
    uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
    if (fp < d->lowest)
        d->lowest = fp;
    long r = depth;
    if (fp > d->stop_at)
        r = recurse(d, depth + 1);
    return r + buf[64] - (char)depth;   /* not a tail call */
}

static void deep_fn(void *arg, void *msg)
{
    struct deep *d = arg;
    (void)msg;
    d->depth = recurse(d, 0);
    weft__fiber_exit(d->f, d->main, NULL);
}

Test(fiber, deep_recursion)
{
    struct weft__stack_cache c;
    cr_assert_eq(weft__stack_cache_init(&c, STACK, 0), 0);
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    struct deep d = {.main = &self, .lowest = UINTPTR_MAX};
    cr_assert_eq(weft__fiber_create(&c, &d.f, deep_fn, &d), 0);
    uintptr_t lo = (uintptr_t)d.f->stack_lo;
    cr_assert_geq(d.f->stack_size, (size_t)STACK);
    /* Down to 8 KiB above the guard page: a frame is ~1 KiB (more under ASan). */
    d.stop_at = lo + 8 * 1024;
    weft__fiber_switch(&self, d.f, NULL);
    cr_assert_lt(d.lowest, lo + 12 * 1024, "deepest frame %#lx, stack bottom %#lx",
                 (unsigned long)d.lowest, (unsigned long)lo);
    cr_assert_geq(d.lowest, lo);
    cr_assert_gt(d.depth, 50);
    weft__fiber_destroy(d.f);
    weft__stack_cache_destroy(&c);
}

static volatile long never = -1;
static char *guard_lo, *guard_hi;

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    char *a = si->si_addr;
    _exit(a >= guard_lo && a < guard_hi ? 42 : 43);
}

static __attribute__((noinline)) long overflow(long depth)
{
    volatile char buf[512];
    buf[0] = (char)depth;
    buf[511] = (char)depth;
    if (depth == never)
        return 0;
    return overflow(depth + 1) + buf[0] + buf[511];
}

static void overflow_fn(void *arg, void *msg)
{
    (void)arg;
    (void)msg;
    overflow(0);
    _exit(44);
}

/* In a forked child (so that both harnesses can run it): an overflow of a fiber
 * stack faults on its guard page. The child's handler runs on an alternate signal
 * stack and exits 42 if the fault address is in the guard page. */
Test(fiber, guard_page)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct weft__stack_cache c;
        struct weft__fiber self, *f;
        if (weft__stack_cache_init(&c, 64 * 1024, 0) != 0 ||
            weft__fiber_create(&c, &f, overflow_fn, NULL) != 0)
            _exit(45);
        guard_lo = (char *)f->stack_lo - c.guard;
        guard_hi = f->stack_lo;
        char perms[5];
        if (map_perms(guard_lo, perms) != 1 || strcmp(perms, "---p") != 0)
            _exit(46);
        stack_t ss = {.ss_size = 256 * 1024};
        ss.ss_sp = mmap(NULL, ss.ss_size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ss.ss_sp == MAP_FAILED || sigaltstack(&ss, NULL) != 0)
            _exit(47);
        struct sigaction sa = {.sa_sigaction = segv_handler,
                               .sa_flags = SA_SIGINFO | SA_ONSTACK};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, NULL);
        weft__fiber_init_thread(&self);
        weft__fiber_switch(&self, f, NULL);
        _exit(48);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(!WIFSIGNALED(status), "child killed by signal %d", WTERMSIG(status));
    cr_assert(WIFEXITED(status));
    cr_assert_eq(WEXITSTATUS(status), 42, "42: fault in the guard page; 43: elsewhere");
}

/* ------------------------------------------------------------------------------
 * Migration between threads
 * ---------------------------------------------------------------------------- */

static _Thread_local int tls_id;
static _Thread_local int tls_var;

/* Read after a switch: never inlined into the function that switched (fiber.h). */
WEFT__TLS_READER static int read_tls_id(void)
{
    return tls_id;
}

WEFT__TLS_READER static int *tls_var_addr(void)
{
    return &tls_var;
}

WEFT__TLS_READER static int read_errno(void)
{
    return errno;
}

struct migrate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct weft__stack_cache cache;
    struct weft__fiber *f;
    int turn;               /* thread (1 or 2) that resumes f next; -1: done */
    int hops, nhops;
    int bad_id, bad_addr, bad_errno;
    int *addr[3];           /* &tls_var of threads 1 and 2 */
};

/* Runs nhops times, alternately on threads 1 and 2. Each resumer passes its own
 * thread's fiber record as the message: that is where to switch back to. */
static void migrate_fn(void *arg, void *msg)
{
    struct migrate *m = arg;
    struct weft__fiber *home = msg;
    for (int h = 0;; h++) {
        int id = read_tls_id();
        if (id != h % 2 + 1)
            m->bad_id++;
        if (tls_var_addr() != m->addr[id & 3])
            m->bad_addr++;
        if (read_errno() != id * 100)
            m->bad_errno++;
        if (h == m->nhops - 1)
            weft__fiber_exit(m->f, home, m->f);
        home = weft__fiber_switch(m->f, home, NULL);
    }
}

struct migrate_arg {
    struct migrate *m;
    int id;
};

static void *migrate_thread(void *arg)
{
    struct migrate_arg *a = arg;
    struct migrate *m = a->m;
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    tls_id = a->id;
    pthread_mutex_lock(&m->mu);
    m->addr[a->id] = &tls_var;
    pthread_cond_broadcast(&m->cv);
    for (;;) {
        while (m->turn != a->id && m->turn != -1)
            pthread_cond_wait(&m->cv, &m->mu);
        if (m->turn == -1)
            break;
        if (!m->f && weft__fiber_create(&m->cache, &m->f, migrate_fn, m) != 0) {
            m->turn = -1;
            break;
        }
        struct weft__fiber *f = m->f;
        pthread_mutex_unlock(&m->mu);
        errno = a->id * 100;
        void *r = weft__fiber_switch(&self, f, &self);
        /* f has finished switching away: only now may the other thread have it. */
        pthread_mutex_lock(&m->mu);
        m->hops++;
        if (r == f) {
            weft__fiber_destroy(f);
            m->turn = -1;
        } else {
            m->turn = 3 - a->id;
        }
        pthread_cond_broadcast(&m->cv);
    }
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

Test(fiber, migrate_between_threads)
{
    struct migrate m = {.nhops = SCALED(2000)};
    pthread_mutex_init(&m.mu, NULL);
    pthread_cond_init(&m.cv, NULL);
    cr_assert_eq(weft__stack_cache_init(&m.cache, 0, 0), 0);
    struct migrate_arg a1 = {&m, 1}, a2 = {&m, 2};
    pthread_t t1, t2;
    /* Thread 1 starts the fiber only once both threads have published &tls_var. */
    pthread_mutex_lock(&m.mu);
    m.turn = 0;
    pthread_mutex_unlock(&m.mu);
    cr_assert_eq(pthread_create(&t1, NULL, migrate_thread, &a1), 0);
    cr_assert_eq(pthread_create(&t2, NULL, migrate_thread, &a2), 0);
    pthread_mutex_lock(&m.mu);
    while (!m.addr[1] || !m.addr[2])
        pthread_cond_wait(&m.cv, &m.mu);
    m.turn = 1;
    pthread_cond_broadcast(&m.cv);
    pthread_mutex_unlock(&m.mu);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    cr_assert_neq(m.addr[1], m.addr[2]);
    cr_assert_eq(m.hops, m.nhops);
    cr_assert_eq(m.bad_id, 0, "a TLS read after migration saw the old thread");
    cr_assert_eq(m.bad_addr, 0, "a TLS address after migration was the old thread's");
    cr_assert_eq(m.bad_errno, 0, "errno after migration was the old thread's");
    cr_assert_eq(weft__stack_cache_total(&m.cache), 1);
    cr_assert_eq(weft__stack_cache_nfree(&m.cache), 1);
    weft__stack_cache_destroy(&m.cache);
    pthread_cond_destroy(&m.cv);
    pthread_mutex_destroy(&m.mu);
}

/* A fiber suspended on a thread that has since exited is resumed on another. */
struct orphan {
    struct weft__stack_cache cache;
    struct weft__fiber *f;
    int ids[2];
};

static void orphan_fn(void *arg, void *msg)
{
    struct orphan *o = arg;
    struct weft__fiber *home = msg;
    o->ids[0] = read_tls_id();
    home = weft__fiber_switch(o->f, home, NULL);
    o->ids[1] = read_tls_id();
    weft__fiber_exit(o->f, home, o->f);
}

static void *orphan_first(void *arg)
{
    struct orphan *o = arg;
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    tls_id = 7;
    if (weft__fiber_create(&o->cache, &o->f, orphan_fn, o) == 0)
        weft__fiber_switch(&self, o->f, &self);
    return NULL;
}

static void *orphan_second(void *arg)
{
    struct orphan *o = arg;
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    tls_id = 8;
    void *r = weft__fiber_switch(&self, o->f, &self);
    if (r == o->f)
        weft__fiber_destroy(o->f);
    return r;
}

Test(fiber, resume_after_thread_exit)
{
    struct orphan o = {0};
    cr_assert_eq(weft__stack_cache_init(&o.cache, 0, 0), 0);
    pthread_t t;
    void *r;
    cr_assert_eq(pthread_create(&t, NULL, orphan_first, &o), 0);
    pthread_join(t, NULL);
    cr_assert_not_null(o.f);
    cr_assert_eq(pthread_create(&t, NULL, orphan_second, &o), 0);
    pthread_join(t, &r);
    cr_assert_eq(r, (void *)o.f);
    cr_assert_eq(o.ids[0], 7);
    cr_assert_eq(o.ids[1], 8);
    cr_assert_eq(weft__stack_cache_nfree(&o.cache), weft__stack_cache_total(&o.cache));
    weft__stack_cache_destroy(&o.cache);
}

/* ------------------------------------------------------------------------------
 * Exit into a fresh fiber, which recycles the stack just left
 * ---------------------------------------------------------------------------- */

struct chain {
    struct weft__stack_cache *cache;
    struct weft__fiber *main, *cur;
    int left, bad;
};

/* Each fiber recycles the one that exited into it (msg), then starts the next and
 * exits into it: the "recycle the stack I just left" message. */
static void chain_fn(void *arg, void *msg)
{
    struct chain *ch = arg;
    struct weft__fiber *me = ch->cur, *next;
    if (msg)
        weft__fiber_destroy(msg);
    if (--ch->left == 0)
        weft__fiber_exit(me, ch->main, me);
    if (weft__fiber_create(ch->cache, &next, chain_fn, ch) != 0) {
        ch->bad++;
        weft__fiber_exit(me, ch->main, me);
    }
    ch->cur = next;
    weft__fiber_exit(me, next, me);
}

Test(fiber, exit_into_fresh_fiber)
{
    struct weft__stack_cache c;
    cr_assert_eq(weft__stack_cache_init(&c, 0, 0), 0);
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    struct chain ch = {.cache = &c, .main = &self, .left = SCALED(10000)};
    cr_assert_eq(weft__fiber_create(&c, &ch.cur, chain_fn, &ch), 0);
    struct weft__fiber *last = weft__fiber_switch(&self, ch.cur, NULL);
    cr_assert_eq(last, ch.cur);
    weft__fiber_destroy(last);
    cr_assert_eq(ch.bad, 0);
    cr_assert_eq(ch.left, 0);
    /* Two stacks take turns: the next fiber is made before the last one is freed. */
    cr_assert_eq(weft__stack_cache_total(&c), 2);
    cr_assert_eq(weft__stack_cache_nfree(&c), 2);
    weft__stack_cache_destroy(&c);
}

/* ------------------------------------------------------------------------------
 * Stack cache
 * ---------------------------------------------------------------------------- */

Test(fiber, cache_recycles)
{
    struct weft__stack_cache c;
    long page = sysconf(_SC_PAGESIZE);
    cr_assert_eq(weft__stack_cache_init(&c, 100000, 0), 0);
    struct weft__stack *s1, *s2;
    cr_assert_eq(weft__stack_get(&c, &s1), 0);
    cr_assert_geq(s1->size, (size_t)100000);
    cr_assert_eq((uintptr_t)s1->lo % (uintptr_t)page, 0);
    cr_assert_eq(weft__stack_cache_total(&c), 1);
    cr_assert_eq(weft__stack_cache_nfree(&c), 0);
    char perms[5];
    cr_assert_eq(map_perms((char *)s1->lo - 1, perms), 1);
    cr_assert(strcmp(perms, "---p") == 0, "guard page is %s", perms);
    cr_assert_eq(map_perms(s1->lo, perms), 1);
    cr_assert(strcmp(perms, "rw-p") == 0, "stack is %s", perms);
    memset(s1->lo, 0xa5, s1->size);     /* all of it is usable */
    weft__stack_put(&c, s1);
    cr_assert_eq(weft__stack_cache_nfree(&c), 1);
    cr_assert_eq(weft__stack_get(&c, &s2), 0);
    cr_assert_eq(s2, s1, "the stack put back is the one handed out next");
    cr_assert_eq(weft__stack_cache_total(&c), 1);
    weft__stack_put(&c, s2);
    void *lo = s1->lo;
    weft__stack_cache_destroy(&c);
    cr_assert_eq(map_perms(lo, perms), 0, "stack still mapped after destroy");
    cr_assert_eq(map_perms((char *)lo - 1, perms), 0, "guard still mapped after destroy");
}

/* Past its limit the cache keeps stacks until they have gone unused for
 * WEFT__STACK_TRIM_NS; weft__stack_cache_trim then unmaps the coldest. The test
 * ages the cache by moving over_since back rather than by sleeping. */
Test(fiber, cache_limit)
{
    struct weft__stack_cache c;
    cr_assert_eq(weft__stack_cache_init(&c, 0, 2), 0);
    struct weft__stack *s[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(weft__stack_get(&c, &s[i]), 0);
    cr_assert_eq(weft__stack_cache_total(&c), 4);
    void *lo[4];
    for (int i = 0; i < 4; i++) {
        lo[i] = s[i]->lo;
        weft__stack_put(&c, s[i]);
    }
    cr_assert_eq(weft__stack_cache_nfree(&c), 4, "a burst's stacks are kept for now");
    cr_assert_eq(weft__stack_cache_total(&c), 4);
    cr_assert_neq(atomic_load(&c.over_since), 0, "going over the limit is timed");
    weft__stack_cache_trim(&c);
    cr_assert_eq(weft__stack_cache_nfree(&c), 4, "trimmed before a second went by");
    atomic_store(&c.over_since, 1); /* long ago */
    weft__stack_cache_trim(&c);
    cr_assert_eq(weft__stack_cache_nfree(&c), 2);
    cr_assert_eq(weft__stack_cache_total(&c), 2);
    cr_assert_eq(atomic_load(&c.over_since), 0);
    char perms[5];
    cr_assert_eq(map_perms(lo[0], perms), 0, "the coldest stacks are unmapped");
    cr_assert_eq(map_perms(lo[1], perms), 0, "the coldest stacks are unmapped");
    struct weft__stack *a = NULL, *b = NULL;
    cr_assert_eq(weft__stack_get(&c, &a), 0);
    cr_assert_eq(weft__stack_get(&c, &b), 0);
    cr_assert_eq(a, s[3], "the warmest stack is kept and handed out first");
    cr_assert_eq(b, s[2]);
    cr_assert_eq(weft__stack_cache_total(&c), 2, "no new mapping for kept stacks");
    weft__stack_put(&c, b);
    weft__stack_put(&c, a);
    cr_assert_eq(atomic_load(&c.over_since), 0, "at the limit, not over it");
    weft__stack_cache_trim(&c);
    cr_assert_eq(weft__stack_cache_nfree(&c), 2, "nothing to trim at the limit");
    weft__stack_cache_destroy(&c);
}

struct many {
    struct weft__fiber *main, *f[16];
    int ran[16];
};

static void many_fn(void *arg, void *msg)
{
    struct many *m = arg;
    int i = (int)(uintptr_t)msg;
    m->ran[i]++;
    weft__fiber_switch(m->f[i], m->main, NULL);
    m->ran[i]++;
    weft__fiber_exit(m->f[i], m->main, m->f[i]);
}

/* Many fibers suspended at once, then each finished and destroyed: every stack is
 * back, the counts match, destroy unmaps them all. Then a fiber left suspended is
 * unmapped by the cache's destruction too. */
Test(fiber, cache_no_leak)
{
    struct weft__stack_cache c;
    cr_assert_eq(weft__stack_cache_init(&c, 0, 0), 0);
    struct weft__fiber self;
    weft__fiber_init_thread(&self);
    struct many m = {.main = &self};
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 16; i++) {
            cr_assert_eq(weft__fiber_create(&c, &m.f[i], many_fn, &m), 0);
            weft__fiber_switch(&self, m.f[i], (void *)(uintptr_t)i);
        }
        cr_assert_eq(weft__stack_cache_nfree(&c), 0);
        for (int i = 15; i >= 0; i--) {
            void *r = weft__fiber_switch(&self, m.f[i], NULL);
            cr_assert_eq(r, (void *)m.f[i]);
            weft__fiber_destroy(m.f[i]);
        }
        cr_assert_eq(weft__stack_cache_total(&c), 16, "round %d", round);
        cr_assert_eq(weft__stack_cache_nfree(&c), 16);
    }
    for (int i = 0; i < 16; i++)
        cr_assert_eq(m.ran[i], 6);
    struct weft__fiber *f;
    cr_assert_eq(weft__fiber_create(&c, &f, many_fn, &m), 0);
    m.f[0] = f;
    weft__fiber_switch(&self, f, (void *)(uintptr_t)0);    /* left suspended */
    void *lo[16];
    size_t n = 0;
    for (struct weft__stack *s = c.all; s; s = s->next)
        lo[n++] = s->lo;
    cr_assert_eq(n, 16);
    weft__stack_cache_destroy(&c);
    char perms[5];
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(map_perms(lo[i], perms), 0, "stack %zu still mapped", i);
}

static void never_fn(void *arg, void *msg)
{
    (void)arg;
    (void)msg;
    abort();
}

Test(fiber, cache_enomem)
{
    struct weft__stack_cache c;
    cr_assert_eq(weft__stack_cache_init(&c, SIZE_MAX, 0), -ENOMEM);
    cr_assert_eq(weft__stack_cache_init(&c, SIZE_MAX / 2, 0), 0);
    struct weft__stack *s = NULL;
    cr_assert_eq(weft__stack_get(&c, &s), -ENOMEM);
    cr_assert_null(s);
    weft__stack_cache_destroy(&c);
    cr_assert_eq(weft__stack_cache_init(&c, (size_t)1 << 62, 0), 0);
    struct weft__fiber *f = NULL;
    cr_assert_eq(weft__fiber_create(&c, &f, never_fn, NULL), -ENOMEM);
    cr_assert_null(f);
    cr_assert_eq(weft__stack_cache_total(&c), 0);
    weft__stack_cache_destroy(&c);
    /* A sane size still works afterwards, and a tiny one is raised to the minimum. */
    cr_assert_eq(weft__stack_cache_init(&c, 1, 0), 0);
    cr_assert_eq(weft__stack_get(&c, &s), 0);
    cr_assert_geq(s->size, WEFT__STACK_MIN);
    weft__stack_put(&c, s);
    weft__stack_cache_destroy(&c);
}

#endif /* WEFT_HAVE_FIBERS */
