// The CUDA emulator's out-of-line parts (see runtime.h).
#include <torch/library.h>

// The schedule of the threads and blocks, from Python:
// torch.ops.spl_emu._emu_schedule("forward" | "reverse" | "shuffle", seed, preempt_at_atomics).
namespace {
void set_schedule(std::string order, int64_t seed, bool preempt) {
  TORCH_CHECK(order == "forward" || order == "reverse" || order == "shuffle",
              "_emu_schedule: order must be forward, reverse or shuffle, got ", order);
  spl_emu::Settings& s = spl_emu::settings();
  s.order = order == "reverse"   ? spl_emu::Order::reverse
            : order == "shuffle" ? spl_emu::Order::shuffle
                                 : spl_emu::Order::forward;
  s.seed = static_cast<uint64_t>(seed);
  s.preempt = preempt;
}

int64_t launches() { return spl_emu::machine().launches; }
}  // namespace

TORCH_LIBRARY_FRAGMENT(spl_emu, m) {
  m.def("_emu_schedule(str order, int seed, bool preempt) -> ()", &set_schedule);
  m.def("_emu_launches() -> int", &launches);
}

// The context switch on x86-64: saves the callee-saved registers,
// MXCSR and the x87 control word on the current stack, stores the stack pointer in *save_sp, then
// restores the same from load_sp. A new thread's stack is laid out by start_context to look like
// a switched-out one whose return address is its entry function.
#if defined(__x86_64__)
asm(R"(
    .text
    .globl spl_emu_switch
    .hidden spl_emu_switch
    .type spl_emu_switch, @function
spl_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size spl_emu_switch, .-spl_emu_switch
    .section .note.GNU-stack,"",@progbits
)");
#endif
