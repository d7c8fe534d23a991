/* Cortex-M4 start-up for tinyqml's QEMU runs (board mps2-an386), linked with mps2_an386.ld.
 *
 * The vector table holds the initial stack pointer and the reset handler. The reset handler copies
 * .data from flash, zeroes .bss, enables the FPU (CPACR CP10/CP11 full access), opens the semihosting
 * handles (without initialise_monitor_handles printf prints nothing), runs the C++/constructor
 * arrays, calls main and exits with its status. Every fault prints "tinyqml-fault exception N" (3 is
 * HardFault, 6 UsageFault) and ends the emulator through semihosting with a run-time-error reason,
 * so QEMU exits non-zero instead of locking up.
 */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

void Reset_Handler(void);
void Fault_Handler(void);

/* -nostartfiles drops crti/crtn; __libc_init_array still calls these. */
void _init(void) {}
void _fini(void) {}

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SEMIHOSTING_SYS_WRITE0 0x04u
#define SEMIHOSTING_SYS_EXIT 0x18u
#define ADP_STOPPED_RUNTIME_ERROR 0x20023u

typedef void (*vector_fn)(void);

__attribute__((section(".isr_vector"), used))
const vector_fn tinyqml_vector_table[16] = {
    (vector_fn)(uintptr_t)&_estack, /* initial main stack pointer */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0, 0, 0, 0,    /* reserved */
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,             /* reserved */
    Fault_Handler, /* PendSV */
    Fault_Handler, /* SysTick */
};

static uint32_t semihost(uint32_t operation, uint32_t argument)
{
    register uint32_t op __asm__("r0") = operation;
    register uint32_t arg __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xab" : "+r"(op) : "r"(arg) : "memory");
    return op;
}

__attribute__((noreturn)) void Fault_Handler(void)
{
    /* "tinyqml-fault exception N" on the semihosting console (SYS_WRITE0 needs no libc), then
     * SYS_EXIT with a run-time-error reason (AArch32 passes the reason itself): QEMU exits with 1. */
    static char message[] = "tinyqml-fault exception 000\n";
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    ipsr &= 0x1ffu;
    message[24] = (char)('0' + ipsr / 100u);
    message[25] = (char)('0' + ipsr / 10u % 10u);
    message[26] = (char)('0' + ipsr % 10u);
    (void)semihost(SEMIHOSTING_SYS_WRITE0, (uint32_t)(uintptr_t)message);
    for (;;) {
        (void)semihost(SEMIHOSTING_SYS_EXIT, ADP_STOPPED_RUNTIME_ERROR);
    }
}

__attribute__((noreturn)) void Reset_Handler(void)
{
    uint32_t *src = &_sidata;
    uint32_t *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; ++dst) {
        *dst = 0u;
    }
    SCB_CPACR |= (0xFu << 20); /* CP10 and CP11: full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    initialise_monitor_handles();
    __libc_init_array();
    exit(main());
}
