/* SPDX-License-Identifier: MIT */
/*
 * Context switch for x86-64 (System V ABI). The design is in lib/fiber.c; the C
 * declarations are in lib/fiber.h.
 *
 * A suspended context is its stack pointer: the callee-saved state is pushed on the
 * context's own stack (the fcontext design of Boost.Context, Oliver Kowalke; this is
 * our own code). Only what the ABI says a call preserves is saved: rbx, rbp,
 * r12-r15, rsp, the MXCSR control bits and the x87 control word. MXCSR is saved and
 * restored whole, as one stmxcsr/ldmxcsr pair; its status flags are caller-saved, so
 * restoring them too is allowed. No vector register is callee-saved in this ABI.
 *
 * Saved frame at ctx->sp (16-byte aligned, 64 bytes):
 *    0  MXCSR (4 bytes), x87 control word (2 bytes), 2 bytes unused
 *    8  r12    16  r13    24  r14    32  r15    40  rbx    48  rbp
 *   56  return address (into the caller of weft__ctx_switch, or weft__ctx_start)
 *
 * Not supported: CET shadow stacks (the switch would need to switch shadow stacks
 * too). This object carries no .note.gnu.property, so the linker marks a program
 * that contains it as not shadow-stack compatible, which is correct.
 */

#if defined(__CET__) && (__CET__ & 1)
#define ENDBR endbr64
#else
#define ENDBR
#endif

    .text

/* void *weft__ctx_switch(struct weft__ctx *from, const struct weft__ctx *to,
 *                        void *msg)
 * rdi = from, rsi = to, rdx = msg. Returns (rax) the msg of whoever switches back. */
    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, @function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    ENDBR
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r15, 0
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r14, 0
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r13, 0
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r12, 0
    subq    $8, %rsp
    .cfi_adjust_cfa_offset 8
    stmxcsr (%rsp)
    fnstcw  4(%rsp)

    /* The frame is complete: publish it, then take the other one. The CFI above
     * describes both, since every saved frame has this layout. */
    movq    %rsp, (%rdi)
    movq    (%rsi), %rsp

    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq    %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq    %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq    %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq    %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    movq    %rdx, %rax
    ret
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/* First code of a fresh context, reached by the ret of weft__ctx_switch with
 * r12 = entry, r13 = arg, rax = msg, rbp = 0 and rsp 16-byte aligned (the top of
 * the stack). Calls entry(arg, msg); entry must not return. The return address is
 * marked undefined so that unwinders and debuggers stop here. */
    .type   weft__ctx_start, @function
    .p2align 4
weft__ctx_start:
    .cfi_startproc
    .cfi_undefined %rip
    movq    %r13, %rdi
    movq    %rax, %rsi
    callq   *%r12
    /* entry returned: there is nothing to return to. */
    callq   abort@PLT
    ud2
    .cfi_endproc
    .size   weft__ctx_start, .-weft__ctx_start

/* void weft__ctx_make(struct weft__ctx *ctx, void *stack_lo, size_t size,
 *                     void (*entry)(void *arg, void *msg), void *arg)
 * rdi = ctx, rsi = stack_lo, rdx = size, rcx = entry, r8 = arg.
 * Builds a saved frame at the (16-byte aligned) top of the stack whose return
 * address is weft__ctx_start. The new context inherits the caller's MXCSR and x87
 * control word, as a new thread inherits its creator's. */
    .globl  weft__ctx_make
    .hidden weft__ctx_make
    .type   weft__ctx_make, @function
    .p2align 4
weft__ctx_make:
    .cfi_startproc
    ENDBR
    leaq    (%rsi,%rdx), %rax
    andq    $-16, %rax
    subq    $64, %rax
    stmxcsr (%rax)
    fnstcw  4(%rax)
    movw    $0, 6(%rax)
    movq    %rcx, 8(%rax)           /* r12: entry */
    movq    %r8, 16(%rax)           /* r13: arg */
    xorl    %ecx, %ecx
    movq    %rcx, 24(%rax)          /* r14 */
    movq    %rcx, 32(%rax)          /* r15 */
    movq    %rcx, 40(%rax)          /* rbx */
    movq    %rcx, 48(%rax)          /* rbp: 0 ends frame-pointer chains */
    leaq    weft__ctx_start(%rip), %rcx
    movq    %rcx, 56(%rax)
    movq    %rax, (%rdi)
    ret
    .cfi_endproc
    .size   weft__ctx_make, .-weft__ctx_make

    .section .note.GNU-stack, "", %progbits
