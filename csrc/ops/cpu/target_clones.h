// SPL_TARGET_CLONES: a hot CPU loop compiled for AVX-512, AVX2 and baseline x86-64, the clone picked
// at load time (GCC on x86-64 Linux; elsewhere the one baseline build). The arithmetic is the same
// in every clone (no FMA contraction: -ffp-contract=off), so are the results.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define SPL_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SPL_TARGET_CLONES
#endif
