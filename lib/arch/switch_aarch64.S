/* SPDX-License-Identifier: MIT */
/*
 * Context switch for AArch64 (AAPCS64). The design is in lib/fiber.c; the C
 * declarations are in lib/fiber.h.
 *
 * A suspended context is its stack pointer: the callee-saved state is stored on the
 * context's own stack (the fcontext design of Boost.Context, Oliver Kowalke; this is
 * our own code). Only what AAPCS64 says a call preserves is saved: x19-x28, the
 * frame pointer x29, the link register x30 (our return address), sp, the low 64 bits
 * of v8-v15 (d8-d15) and FPCR (rounding mode, flush-to-zero; FPSR holds only
 * cumulative flags, which a call may change). Writing FPCR can be slow on some
 * cores, so it is written only when the two contexts' values differ.
 *
 * Saved frame at ctx->sp (16-byte aligned, 176 bytes):
 *    0 x19 x20   16 x21 x22   32 x23 x24   48 x25 x26   64 x27 x28   80 x29 x30
 *   96 d8 d9    112 d10 d11  128 d12 d13  144 d14 d15  160 FPCR     168 unused
 *
 * Not supported: pointer authentication of the saved x30 and BTI landing pads
 * beyond the entry points (Debian 12 builds neither by default). A caller built
 * with -mbranch-protection=pac-ret still works: it signs and checks its own return
 * address on its own stack, which is switched intact.
 */

#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define BTI_C hint #34
#else
#define BTI_C
#endif

    .text

/* void *weft__ctx_switch(struct weft__ctx *from, const struct weft__ctx *to,
 *                        void *msg)
 * x0 = from, x1 = to, x2 = msg. Returns (x0) the msg of whoever switches back. */
    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, %function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    BTI_C
    sub     sp, sp, #176
    .cfi_def_cfa_offset 176
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8,  d9,  [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    .cfi_offset x19, -176
    .cfi_offset x20, -168
    .cfi_offset x21, -160
    .cfi_offset x22, -152
    .cfi_offset x23, -144
    .cfi_offset x24, -136
    .cfi_offset x25, -128
    .cfi_offset x26, -120
    .cfi_offset x27, -112
    .cfi_offset x28, -104
    .cfi_offset x29, -96
    .cfi_offset x30, -88
    .cfi_offset d8,  -80
    .cfi_offset d9,  -72
    .cfi_offset d10, -64
    .cfi_offset d11, -56
    .cfi_offset d12, -48
    .cfi_offset d13, -40
    .cfi_offset d14, -32
    .cfi_offset d15, -24
    mrs     x9, fpcr
    str     x9, [sp, #160]

    /* The frame is complete: publish it, then take the other one. The CFI above
     * describes both, since every saved frame has this layout. */
    mov     x10, sp
    str     x10, [x0]
    ldr     x10, [x1]
    mov     sp, x10

    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8,  d9,  [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    ldr     x10, [sp, #160]
    cmp     x9, x10                 /* x9: this thread's FPCR, unchanged since mrs */
    b.eq    1f
    msr     fpcr, x10
1:
    add     sp, sp, #176
    .cfi_def_cfa_offset 0
    .cfi_restore x19
    .cfi_restore x20
    .cfi_restore x21
    .cfi_restore x22
    .cfi_restore x23
    .cfi_restore x24
    .cfi_restore x25
    .cfi_restore x26
    .cfi_restore x27
    .cfi_restore x28
    .cfi_restore x29
    .cfi_restore x30
    .cfi_restore d8
    .cfi_restore d9
    .cfi_restore d10
    .cfi_restore d11
    .cfi_restore d12
    .cfi_restore d13
    .cfi_restore d14
    .cfi_restore d15
    mov     x0, x2
    ret
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/* First code of a fresh context, reached by the ret of weft__ctx_switch with
 * x19 = entry, x20 = arg, x0 = msg, x29 = 0 and sp 16-byte aligned (the top of the
 * stack). Calls entry(arg, msg); entry must not return. The return address is
 * marked undefined so that unwinders and debuggers stop here. */
    .type   weft__ctx_start, %function
    .p2align 4
weft__ctx_start:
    .cfi_startproc
    .cfi_undefined x30
    mov     x1, x0
    mov     x0, x20
    blr     x19
    /* entry returned: there is nothing to return to. */
    bl      abort
    brk     #0x3e8
    .cfi_endproc
    .size   weft__ctx_start, .-weft__ctx_start

/* void weft__ctx_make(struct weft__ctx *ctx, void *stack_lo, size_t size,
 *                     void (*entry)(void *arg, void *msg), void *arg)
 * x0 = ctx, x1 = stack_lo, x2 = size, x3 = entry, x4 = arg.
 * Builds a saved frame at the (16-byte aligned) top of the stack whose return
 * address is weft__ctx_start. The new context inherits the caller's FPCR, as a new
 * thread inherits its creator's. */
    .globl  weft__ctx_make
    .hidden weft__ctx_make
    .type   weft__ctx_make, %function
    .p2align 4
weft__ctx_make:
    .cfi_startproc
    BTI_C
    add     x9, x1, x2
    and     x9, x9, #-16
    sub     x9, x9, #176
    stp     x3,  x4,  [x9, #0]      /* x19: entry, x20: arg */
    stp     xzr, xzr, [x9, #16]
    stp     xzr, xzr, [x9, #32]
    stp     xzr, xzr, [x9, #48]
    stp     xzr, xzr, [x9, #64]
    adr     x10, weft__ctx_start
    stp     xzr, x10, [x9, #80]     /* x29 = 0 ends frame-pointer chains; x30 */
    stp     xzr, xzr, [x9, #96]
    stp     xzr, xzr, [x9, #112]
    stp     xzr, xzr, [x9, #128]
    stp     xzr, xzr, [x9, #144]
    mrs     x10, fpcr
    stp     x10, xzr, [x9, #160]
    str     x9, [x0]
    ret
    .cfi_endproc
    .size   weft__ctx_make, .-weft__ctx_make

    .section .note.GNU-stack, "", %progbits
