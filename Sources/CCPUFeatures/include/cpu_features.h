// What the processor can execute: CPUID feature bits, masked by the register state the operating
// system saves (XGETBV), so an instruction set counts only when both the CPU and the OS enable it.
#ifndef KDGPU_CPU_FEATURES_H
#define KDGPU_CPU_FEATURES_H

#include <stdbool.h>

typedef struct {
    char vendor[13];         // "GenuineIntel", "AuthenticAMD", ... ("" off x86)
    char brand[49];          // the processor's name string
    int family, model;       // display family and model (base + extended)
    bool sse41, avx, fma, f16c, avx2;
    bool avx512f, avx512dq, avx512bw, avx512vl, avx512vnni, avx512bf16;
    bool amxTile, amxBF16, amxInt8;
    bool osSavesYMM;         // XCR0 bits 1-2: SSE and AVX state
    bool osSavesZMM;         // XCR0 bits 5-7: opmask and the upper ZMM registers
    bool osSavesAMX;         // XCR0 bits 17-18: AMX tile configuration and data
} kdgpu_cpu_features;

/// Fills `features` from CPUID and XGETBV (all false on other architectures).
void kdgpu_read_cpu_features(kdgpu_cpu_features *features);

#endif
