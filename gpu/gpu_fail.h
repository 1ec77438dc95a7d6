/* gpu_fail.h - which GPU failures stop what (a batch, one backend, both), and the per-backend failed flags */
#ifndef SS_GPU_FAIL_H
#define SS_GPU_FAIL_H
#include <stdio.h>

/* Plain C (static inline, GCC atomics) so tests/test_gpu_fail.c checks the
 * policy and the flags on the host; gpu/gpu_core.cu maps CUDA and cuBLAS
 * codes to the classes below. */

enum { SS_GF_CUDA = 0, SS_GF_CUBLAS = 1, SS_GF_NBACKENDS = 2 };

/* What a failed call says about the future, before the context is checked. */
typedef enum ss_gf_class {
    SS_GF_CALL = 0,    /* this call failed (bad argument, not supported, launch failed): maybe this batch only */
    SS_GF_BACKEND = 1, /* this backend cannot run here (no kernel image for the GPU, cuBLAS cannot start) */
} ss_gf_class;

/* What is stopped. */
typedef enum ss_gf_scope {
    SS_GF_SCOPE_BATCH = 0,   /* the batch's jobs get the error; the backend stays up */
    SS_GF_SCOPE_BACKEND = 1, /* the backend that ran the batch is marked failed */
    SS_GF_SCOPE_ALL = 2,     /* the context is broken (a sticky error): both backends are marked failed */
} ss_gf_scope;

/* context_ok: a stream synchronise after the failure, with the failed call's
 * own (non-sticky) error cleared, succeeded. A sticky error (illegal address,
 * a kernel that faulted) makes every later call fail, so it shows there. */
static inline ss_gf_scope ss_gf_decide(ss_gf_class cls, int context_ok) {
    if (!context_ok) return SS_GF_SCOPE_ALL;
    return cls == SS_GF_BACKEND ? SS_GF_SCOPE_BACKEND : SS_GF_SCOPE_BATCH;
}

/* Failed flags, one per backend. Writers hold the GPU lock; readers (the
 * HTTP polling thread asking /backends or `auto`) take no lock: the reason
 * is written once, before its flag is published with a release store, and
 * never rewritten. */
typedef struct ss_gf_state {
    int failed[SS_GF_NBACKENDS];
    char reason[SS_GF_NBACKENDS][256];
} ss_gf_state;

/* Marks backend b failed with msg; the first failure's message stays. */
static inline void ss_gf_mark(ss_gf_state *s, int b, const char *msg) {
    if (__atomic_load_n(&s->failed[b], __ATOMIC_RELAXED)) return;
    snprintf(s->reason[b], sizeof s->reason[b], "GPU failed: %.240s", msg);
    __atomic_store_n(&s->failed[b], 1, __ATOMIC_RELEASE);
}

/* Applies a decision for a batch of backend b. */
static inline void ss_gf_apply(ss_gf_state *s, ss_gf_scope scope, int b, const char *msg) {
    if (scope == SS_GF_SCOPE_ALL)
        for (int i = 0; i < SS_GF_NBACKENDS; i++) ss_gf_mark(s, i, msg);
    else if (scope == SS_GF_SCOPE_BACKEND)
        ss_gf_mark(s, b, msg);
}

/* 1 when backend b is marked failed (*reason, if not NULL, gets why). Lock-free. */
static inline int ss_gf_failed(const ss_gf_state *s, int b, const char **reason) {
    if (!__atomic_load_n(&s->failed[b], __ATOMIC_ACQUIRE)) return 0;
    if (reason) *reason = s->reason[b];
    return 1;
}

#endif
