#include "cpu_features.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long read_xcr0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

void kdgpu_read_cpu_features(kdgpu_cpu_features *f) {
    memset(f, 0, sizeof *f);
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return;
    unsigned int maxLeaf = eax;
    memcpy(f->vendor, &ebx, 4);
    memcpy(f->vendor + 4, &edx, 4);
    memcpy(f->vendor + 8, &ecx, 4);

    __get_cpuid(1, &eax, &ebx, &ecx, &edx);
    int baseFamily = (eax >> 8) & 0xf, baseModel = (eax >> 4) & 0xf;
    f->family = baseFamily == 0xf ? baseFamily + ((eax >> 20) & 0xff) : baseFamily;
    f->model = (baseFamily == 0x6 || baseFamily == 0xf) ? baseModel + (((eax >> 16) & 0xf) << 4) : baseModel;
    f->sse41 = ecx & (1u << 19);
    f->fma = ecx & (1u << 12);
    f->f16c = ecx & (1u << 29);
    bool osxsave = ecx & (1u << 27);
    bool avx = ecx & (1u << 28);
    unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
    f->osSavesYMM = (xcr0 & 0x6) == 0x6;
    f->osSavesZMM = f->osSavesYMM && (xcr0 & 0xe0) == 0xe0;
    f->osSavesAMX = (xcr0 & 0x60000) == 0x60000;
    f->avx = avx && f->osSavesYMM;
    f->fma = f->fma && f->osSavesYMM;
    f->f16c = f->f16c && f->osSavesYMM;

    if (maxLeaf >= 7) {
        __cpuid_count(7, 0, eax, ebx, ecx, edx);
        unsigned int subleaves = eax;
        f->avx2 = (ebx & (1u << 5)) && f->osSavesYMM;
        f->avx512f = (ebx & (1u << 16)) && f->osSavesZMM;
        f->avx512dq = (ebx & (1u << 17)) && f->avx512f;
        f->avx512bw = (ebx & (1u << 30)) && f->avx512f;
        f->avx512vl = (ebx & (1u << 31)) && f->avx512f;
        f->avx512vnni = (ecx & (1u << 11)) && f->avx512f;
        f->amxBF16 = (edx & (1u << 22)) && f->osSavesAMX;
        f->amxTile = (edx & (1u << 24)) && f->osSavesAMX;
        f->amxInt8 = (edx & (1u << 25)) && f->osSavesAMX;
        if (subleaves >= 1) {
            __cpuid_count(7, 1, eax, ebx, ecx, edx);
            f->avx512bf16 = (eax & (1u << 5)) && f->avx512f;
        }
    }

    __get_cpuid(0x80000000, &eax, &ebx, &ecx, &edx);
    if (eax >= 0x80000004) {
        unsigned int words[12];
        for (unsigned int leaf = 0; leaf < 3; leaf++) {
            __get_cpuid(0x80000002 + leaf, &words[leaf * 4], &words[leaf * 4 + 1], &words[leaf * 4 + 2], &words[leaf * 4 + 3]);
        }
        memcpy(f->brand, words, 48);
        f->brand[48] = 0;
    }
}
#else
void kdgpu_read_cpu_features(kdgpu_cpu_features *f) { memset(f, 0, sizeof *f); }
#endif
