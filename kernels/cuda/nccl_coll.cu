/*
 * fptq_collectives over NCCL (worker/comm.h's interface, device buffers).
 * A reduction is computed once along NCCL's ring or tree and the result
 * travels to every member, so all members hold the same bits, as the
 * interface asks. Each call waits for its result while watching for NCCL's
 * asynchronous errors, so a dead peer turns into a status, not a hang.
 */
#include "cuda_common.cuh"
#include "nccl_coll.h"

#include <nccl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

typedef struct nccl_ctx {
    ncclComm_t comm;
    cudaStream_t stream;
    int rank, size;
    int failed; /* an operation failed: the communicator is aborted, not destroyed */
} nccl_ctx;

static fptq_status nccl_fail(nccl_ctx *x, const char *file, int line, const char *call, ncclResult_t r)
{
    const char *last = x && x->comm ? ncclGetLastError(x->comm) : ncclGetLastError(NULL);
    const char *short_file = file;
    for (const char *p = file; *p; p++)
        if (strncmp(p, "kernels/", 8) == 0)
            short_file = p;
    if (x)
        x->failed = 1;
    return fptq_fail(FPTQ_ERR_COMM, file, line, "%s:%d: %.200s failed: %s%s%s (NCCL)", short_file, line,
                     call, ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
}

#define ncclCheck(x, call)                                                                   \
    do {                                                                                     \
        ncclResult_t r_ = (call);                                                            \
        if (r_ != ncclSuccess)                                                               \
            return nccl_fail((x), __FILE__, __LINE__, #call, r_);                            \
    } while (0)

extern "C" size_t fptq_nccl_id_bytes(void) { return sizeof(ncclUniqueId); }

extern "C" fptq_status fptq_nccl_make_id(void *id, size_t cap)
{
    if (cap < sizeof(ncclUniqueId))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "NCCL id: %zu bytes of room, %zu needed", cap,
                         sizeof(ncclUniqueId));
    ncclUniqueId uid;
    ncclCheck(NULL, ncclGetUniqueId(&uid));
    memcpy(id, &uid, sizeof uid);
    return FPTQ_OK;
}

/* Waits for the stream, checking NCCL's asynchronous error meanwhile. */
static fptq_status nccl_wait(nccl_ctx *x)
{
    for (;;) {
        const cudaError_t e = cudaStreamQuery(x->stream);
        if (e == cudaSuccess)
            return FPTQ_OK;
        if (e != cudaErrorNotReady) {
            x->failed = 1;
            return cuda_fail(cudaGetErrorName(e), __FILE__, __LINE__,
                             "cudaStreamQuery(collective)", cudaGetErrorString(e));
        }
        ncclResult_t async = ncclSuccess;
        ncclCheck(x, ncclCommGetAsyncError(x->comm, &async));
        if (async != ncclSuccess && async != ncclInProgress)
            return nccl_fail(x, __FILE__, __LINE__, "collective (asynchronous error)", async);
        sched_yield();
    }
}

static fptq_status nccl_type(fptq_dtype t, ncclDataType_t *out)
{
    switch (t) {
    case FPTQ_DT_F32: *out = ncclFloat32; return FPTQ_OK;
    case FPTQ_DT_F64: *out = ncclFloat64; return FPTQ_OK;
    case FPTQ_DT_I64: *out = ncclInt64; return FPTQ_OK;
    case FPTQ_DT_U8: *out = ncclUint8; return FPTQ_OK;
    }
    return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "NCCL: unknown data type %d", (int)t);
}

static fptq_status nccl_allreduce(void *ctx, void *buf, size_t count, fptq_dtype t, fptq_reduce_op op)
{
    nccl_ctx *x = (nccl_ctx *)ctx;
    if (count == 0)
        return FPTQ_OK;
    ncclDataType_t dt = ncclUint8;
    FPTQ_TRY(nccl_type(t, &dt));
    const ncclRedOp_t rop = op == FPTQ_OP_MAX ? ncclMax : ncclSum;
    ncclCheck(x, ncclAllReduce(buf, buf, count, dt, rop, x->comm, x->stream));
    return nccl_wait(x);
}

static fptq_status nccl_broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    nccl_ctx *x = (nccl_ctx *)ctx;
    if (bytes == 0)
        return FPTQ_OK;
    if (root < 0 || root >= x->size)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "NCCL broadcast: root %d of %d members", root, x->size);
    ncclCheck(x, ncclBroadcast(buf, buf, bytes, ncclUint8, root, x->comm, x->stream));
    return nccl_wait(x);
}

/* One broadcast per member, grouped so that NCCL runs them together: any
 * counts, no padding, and member m's block lands at the sum of counts before it. */
static fptq_status nccl_allgatherv(void *ctx, const void *send, void *recv, const size_t *counts)
{
    nccl_ctx *x = (nccl_ctx *)ctx;
    fptq_status st = FPTQ_OK;
    ncclCheck(x, ncclGroupStart());
    size_t off = 0;
    for (int m = 0; m < x->size; m++) {
        if (counts[m] == 0)
            continue;
        char *dst = (char *)recv + off;
        const void *src = m == x->rank ? send : dst;
        const ncclResult_t r = ncclBroadcast(src, dst, counts[m], ncclUint8, m, x->comm, x->stream);
        if (r != ncclSuccess && st == FPTQ_OK)
            st = nccl_fail(x, __FILE__, __LINE__, "ncclBroadcast(allgatherv block)", r);
        off += counts[m];
    }
    /* the group is closed even after a failure inside it */
    const ncclResult_t r = ncclGroupEnd();
    if (r != ncclSuccess && st == FPTQ_OK)
        st = nccl_fail(x, __FILE__, __LINE__, "ncclGroupEnd()", r);
    if (st != FPTQ_OK)
        return st;
    return nccl_wait(x);
}

extern "C" fptq_status fptq_nccl_init(const void *id, size_t id_bytes, int rank, int size,
                                      int local_rank, fptq_collectives *out)
{
    memset(out, 0, sizeof *out);
    if (id_bytes != sizeof(ncclUniqueId))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "NCCL id of %zu bytes, expected %zu", id_bytes,
                         sizeof(ncclUniqueId));
    if (size < 1 || rank < 0 || rank >= size || local_rank < 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "NCCL: rank %d of %d, local rank %d", rank, size, local_rank);
    int n_dev = 0;
    cudaCheck(cudaGetDeviceCount(&n_dev));
    if (n_dev < 1)
        return FPTQ_FAIL(FPTQ_ERR_BACKEND, "NCCL: no CUDA device");
    FPTQ_TRY(fptq_cuda_init(local_rank % n_dev));
    nccl_ctx *x = NULL;
    FPTQ_TRY(fptq_calloc(1, sizeof *x, "NCCL communicator", &x));
    x->rank = rank;
    x->size = size;
    x->stream = (cudaStream_t)fptq_cuda_stream();
    ncclUniqueId uid;
    memcpy(&uid, id, sizeof uid);
    const ncclResult_t r = ncclCommInitRank(&x->comm, size, uid, rank);
    if (r != ncclSuccess) {
        const fptq_status st = nccl_fail(x, __FILE__, __LINE__, "ncclCommInitRank", r);
        fptq_error_context("NCCL set-up, rank %d of %d on GPU %d", rank, size, local_rank % n_dev);
        free(x);
        return st;
    }
    out->name = "nccl";
    out->rank = rank;
    out->size = size;
    out->allreduce = nccl_allreduce;
    out->broadcast = nccl_broadcast;
    out->allgatherv = nccl_allgatherv;
    out->ctx = x;
    return FPTQ_OK;
}

extern "C" void fptq_nccl_free(fptq_collectives *c)
{
    if (!c || !c->ctx)
        return;
    nccl_ctx *x = (nccl_ctx *)c->ctx;
    if (x->comm) {
        if (x->failed) {
            ncclCommAbort(x->comm);
        } else {
            cudaStreamSynchronize(x->stream);
            ncclCommDestroy(x->comm);
        }
    }
    free(x);
    memset(c, 0, sizeof *c);
}
