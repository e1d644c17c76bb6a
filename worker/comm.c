/*
 * MPI implementation of worker/comm.h. Errors come back as return codes
 * (MPI_ERRORS_RETURN) and become statuses naming the call; reductions are
 * computed once on the stage's first rank and broadcast, so every member
 * holds the same bits.
 */
#include "comm.h"

#include "../kernels/backend.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

typedef struct mpi_impl {
    MPI_Comm world, node, stage;
    MPI_Request *posted;       /* fptq_world_post's sends not yet flushed */
    size_t n_posted, cap_posted;
} mpi_impl;

/* Largest piece one MPI call moves: counts are int. */
#define MPI_PIECE ((size_t)1 << 30)

static fptq_status mpi_check(int rc, const char *call, const char *file, int line)
{
    if (rc == MPI_SUCCESS)
        return FPTQ_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return fptq_fail(FPTQ_ERR_COMM, file, line, "%s failed: %s", call, msg);
}
#define MPI_TRY(call) FPTQ_TRY(mpi_check((call), #call, __FILE__, __LINE__))

static MPI_Datatype mpi_type(fptq_dtype t, size_t *size)
{
    switch (t) {
    case FPTQ_DT_F32: *size = 4; return MPI_FLOAT;
    case FPTQ_DT_F64: *size = 8; return MPI_DOUBLE;
    case FPTQ_DT_I64: *size = 8; return MPI_INT64_T;
    default: *size = 1; return MPI_UINT8_T;
    }
}

static fptq_status bcast_bytes(MPI_Comm comm, void *buf, size_t bytes, int root)
{
    for (size_t off = 0; off < bytes; off += MPI_PIECE) {
        const size_t n = bytes - off < MPI_PIECE ? bytes - off : MPI_PIECE;
        MPI_TRY(MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, comm));
    }
    return FPTQ_OK;
}

static fptq_status coll_allreduce(void *ctx, void *buf, size_t count, fptq_dtype t, fptq_reduce_op op)
{
    mpi_impl *m = ctx;
    size_t esize;
    MPI_Datatype dt = mpi_type(t, &esize);
    int rank;
    MPI_Comm_rank(m->stage, &rank);
    const size_t piece = MPI_PIECE / esize;
    for (size_t off = 0; off < count; off += piece) {
        const size_t n = count - off < piece ? count - off : piece;
        char *p = (char *)buf + off * esize;
        /* reduce to one rank, then broadcast: identical bits everywhere */
        MPI_TRY(MPI_Reduce(rank == 0 ? MPI_IN_PLACE : p, rank == 0 ? p : NULL, (int)n, dt,
                           op == FPTQ_OP_MAX ? MPI_MAX : MPI_SUM, 0, m->stage));
        MPI_TRY(MPI_Bcast(p, (int)n, dt, 0, m->stage));
    }
    return FPTQ_OK;
}

static fptq_status coll_broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    return bcast_bytes(((mpi_impl *)ctx)->stage, buf, bytes, root);
}

/* Each member's block broadcast in turn: blocks may exceed 2^31 bytes, which
 * MPI_Allgatherv's int counts and displacements cannot express. */
static fptq_status coll_allgatherv(void *ctx, const void *send, void *recv, const size_t *counts)
{
    mpi_impl *m = ctx;
    int rank, size;
    MPI_Comm_rank(m->stage, &rank);
    MPI_Comm_size(m->stage, &size);
    size_t off = 0;
    for (int r = 0; r < size; r++) {
        char *dst = (char *)recv + off;
        if (r == rank && counts[r] && dst != send)
            memmove(dst, send, counts[r]);
        FPTQ_TRY(bcast_bytes(m->stage, dst, counts[r], r));
        off += counts[r];
    }
    return FPTQ_OK;
}

/* Whether a launcher (mpirun, mpiexec, srun with PMI/PMIx) started this
 * process as one of several ranks. A plain `fptq quantize` skips MPI
 * altogether: no singleton start-up, and it runs where no MPI runtime
 * works. FPTQ_MPI=1 forces MPI on, FPTQ_MPI=0 off. */
static int launched_by_mpi(void)
{
    const char *force = getenv("FPTQ_MPI");
    if (force && force[0])
        return strcmp(force, "0") != 0;
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

fptq_status fptq_world_init(int *argc, char ***argv, fptq_world *w)
{
    memset(w, 0, sizeof *w);
    if (!launched_by_mpi()) {
        w->size = w->node_size = w->n_nodes = w->stages = w->per_stage = 1;
        fptq_collectives_single(&w->stage_coll);
        return FPTQ_OK;
    }
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        MPI_TRY(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    }
    mpi_impl *m;
    FPTQ_TRY(fptq_calloc(1, sizeof *m, "MPI state", &m));
    w->impl = m;
    m->world = MPI_COMM_WORLD;
    m->node = m->stage = MPI_COMM_NULL;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_TRY(MPI_Comm_rank(MPI_COMM_WORLD, &w->rank));
    MPI_TRY(MPI_Comm_size(MPI_COMM_WORLD, &w->size));
    MPI_TRY(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &m->node));
    MPI_TRY(MPI_Comm_rank(m->node, &w->node_rank));
    MPI_TRY(MPI_Comm_size(m->node, &w->node_size));
    int leader = w->node_rank == 0;
    MPI_TRY(MPI_Allreduce(&leader, &w->n_nodes, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    return fptq_world_set_grid(w, 1);
}

fptq_status fptq_world_set_grid(fptq_world *w, int stages)
{
    mpi_impl *m = w->impl;
    if (stages < 1 || w->size % stages != 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--stages %d does not divide the %d ranks", stages, w->size);
    if (m->stage != MPI_COMM_NULL)
        MPI_Comm_free(&m->stage);
    w->stages = stages;
    w->per_stage = w->size / stages;
    w->stage = w->rank / w->per_stage;
    w->member = w->rank % w->per_stage;
    MPI_TRY(MPI_Comm_split(MPI_COMM_WORLD, w->stage, w->rank, &m->stage));
    MPI_Comm_set_errhandler(m->stage, MPI_ERRORS_RETURN);
    w->stage_coll = (fptq_collectives){.name = "mpi", .rank = w->member, .size = w->per_stage,
                                       .allreduce = coll_allreduce, .broadcast = coll_broadcast,
                                       .allgatherv = coll_allgatherv, .ctx = m};
    return FPTQ_OK;
}

void fptq_world_finalize(fptq_world *w)
{
    mpi_impl *m = w->impl;
    if (!m)
        return; /* one rank without MPI */
    if (m) {
        if (m->stage != MPI_COMM_NULL)
            MPI_Comm_free(&m->stage);
        if (m->node != MPI_COMM_NULL)
            MPI_Comm_free(&m->node);
        free(m->posted);
        free(m);
    }
    w->impl = NULL;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized)
        MPI_Finalize();
}

void fptq_world_abort(const fptq_world *w, int exit_code)
{
    if (w->impl)
        MPI_Abort(MPI_COMM_WORLD, exit_code);
}

fptq_status fptq_world_send(const fptq_world *w, int dest, const void *buf, size_t bytes, int tag)
{
    for (size_t off = 0; off < bytes || off == 0; off += MPI_PIECE) {
        const size_t n = bytes - off < MPI_PIECE ? bytes - off : MPI_PIECE;
        MPI_TRY(MPI_Send((const char *)buf + off, (int)n, MPI_BYTE, dest, tag, MPI_COMM_WORLD));
        if (bytes == 0)
            break;
    }
    return FPTQ_OK;
}

fptq_status fptq_world_recv(const fptq_world *w, int src, void *buf, size_t bytes, int tag)
{
    for (size_t off = 0; off < bytes || off == 0; off += MPI_PIECE) {
        const size_t n = bytes - off < MPI_PIECE ? bytes - off : MPI_PIECE;
        MPI_Status stt;
        MPI_TRY(MPI_Recv((char *)buf + off, (int)n, MPI_BYTE, src, tag, MPI_COMM_WORLD, &stt));
        int got = 0;
        MPI_Get_count(&stt, MPI_BYTE, &got);
        if ((size_t)got != n)
            return FPTQ_FAIL(FPTQ_ERR_COMM, "rank %d: message from rank %d (tag %d) has %d bytes, expected %zu",
                             w->rank, src, tag, got, n);
        if (bytes == 0)
            break;
    }
    return FPTQ_OK;
}

fptq_status fptq_world_allreduce_max(const fptq_world *w, double *v)
{
    MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    return FPTQ_OK;
}

fptq_status fptq_world_bcast(const fptq_world *w, void *buf, size_t bytes, int root)
{
    return bcast_bytes(MPI_COMM_WORLD, buf, bytes, root);
}

fptq_status fptq_world_barrier(const fptq_world *w)
{
    if (!w->impl)
        return FPTQ_OK;
    MPI_TRY(MPI_Barrier(MPI_COMM_WORLD));
    return FPTQ_OK;
}

fptq_status fptq_world_post(fptq_world *w, int dest, const void *buf, size_t bytes, int tag)
{
    mpi_impl *m = w->impl;
    if (bytes > (size_t)INT_MAX)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "fptq_world_post: %zu bytes is too large for one message", bytes);
    if (m->n_posted == m->cap_posted) {
        const size_t cap = m->cap_posted ? 2 * m->cap_posted : 16;
        MPI_Request *r = realloc(m->posted, cap * sizeof *r);
        if (!r)
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "cannot grow the list of pending sends to %zu", cap);
        m->posted = r;
        m->cap_posted = cap;
    }
    MPI_TRY(MPI_Isend(buf, (int)bytes, MPI_BYTE, dest, tag, MPI_COMM_WORLD, &m->posted[m->n_posted]));
    m->n_posted++;
    return FPTQ_OK;
}

fptq_status fptq_world_flush(fptq_world *w)
{
    mpi_impl *m = w->impl;
    if (m->n_posted)
        MPI_TRY(MPI_Waitall((int)m->n_posted, m->posted, MPI_STATUSES_IGNORE));
    m->n_posted = 0;
    return FPTQ_OK;
}

fptq_status fptq_world_note_poll(const fptq_world *w, int tag, void *buf, size_t bytes, int *got)
{
    MPI_Status stt;
    *got = 0;
    MPI_TRY(MPI_Iprobe(MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, got, &stt));
    if (!*got)
        return FPTQ_OK;
    return fptq_world_recv(w, stt.MPI_SOURCE, buf, bytes, tag);
}

fptq_status fptq_world_note_wait(const fptq_world *w, int tag, void *buf, size_t bytes)
{
    MPI_Status stt;
    MPI_TRY(MPI_Probe(MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, &stt));
    return fptq_world_recv(w, stt.MPI_SOURCE, buf, bytes, tag);
}

/* ---- a single rank, no MPI ---------------------------------------------------- */

static fptq_status single_allreduce(void *ctx, void *buf, size_t count, fptq_dtype t, fptq_reduce_op op)
{
    return FPTQ_OK;
}
static fptq_status single_broadcast(void *ctx, void *buf, size_t bytes, int root) { return FPTQ_OK; }
static fptq_status single_allgatherv(void *ctx, const void *send, void *recv, const size_t *counts)
{
    if (counts[0] && recv != send)
        memmove(recv, send, counts[0]);
    return FPTQ_OK;
}

void fptq_collectives_single(fptq_collectives *c)
{
    *c = (fptq_collectives){.name = "single", .rank = 0, .size = 1, .allreduce = single_allreduce,
                            .broadcast = single_broadcast, .allgatherv = single_allgatherv};
}

/* ---- collectives on backend memory, staged through the host ---------------------- */

typedef struct staged_ctx {
    const fptq_backend *be;
    const fptq_collectives *host;
    char *buf;                 /* host staging, grown on demand */
    size_t cap;
} staged_ctx;

static fptq_status staged_buf(staged_ctx *s, size_t bytes)
{
    if (bytes <= s->cap)
        return FPTQ_OK;
    char *p = realloc(s->buf, bytes);
    if (!p)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "collectives: cannot allocate %zu bytes of host staging", bytes);
    s->buf = p;
    s->cap = bytes;
    return FPTQ_OK;
}

static size_t dtype_size(fptq_dtype t)
{
    size_t size;
    (void)mpi_type(t, &size);
    return size;
}

static fptq_status staged_allreduce(void *ctx, void *buf, size_t count, fptq_dtype t, fptq_reduce_op op)
{
    staged_ctx *s = ctx;
    const size_t bytes = count * dtype_size(t);
    FPTQ_TRY(staged_buf(s, bytes));
    FPTQ_TRY(s->be->download(s->buf, buf, bytes));
    FPTQ_TRY(s->host->allreduce(s->host->ctx, s->buf, count, t, op));
    return s->be->upload(buf, s->buf, bytes);
}

static fptq_status staged_broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    staged_ctx *s = ctx;
    FPTQ_TRY(staged_buf(s, bytes));
    if (s->host->rank == root)
        FPTQ_TRY(s->be->download(s->buf, buf, bytes));
    FPTQ_TRY(s->host->broadcast(s->host->ctx, s->buf, bytes, root));
    return s->be->upload(buf, s->buf, bytes);
}

static fptq_status staged_allgatherv(void *ctx, const void *send, void *recv, const size_t *counts)
{
    staged_ctx *s = ctx;
    size_t total = 0, off = 0;
    for (int m = 0; m < s->host->size; m++) {
        if (m < s->host->rank)
            off += counts[m];
        total += counts[m];
    }
    FPTQ_TRY(staged_buf(s, total));
    /* the send block goes to its own place in the host buffer, as the MPI table allows */
    FPTQ_TRY(s->be->download(s->buf + off, send, counts[s->host->rank]));
    FPTQ_TRY(s->host->allgatherv(s->host->ctx, s->buf + off, s->buf, counts));
    return s->be->upload(recv, s->buf, total);
}

fptq_status fptq_collectives_staged(const fptq_backend *be, const fptq_collectives *host, fptq_collectives *out)
{
    staged_ctx *s;
    FPTQ_TRY(fptq_calloc(1, sizeof *s, "staged collectives", &s));
    s->be = be;
    s->host = host;
    *out = (fptq_collectives){.name = "staged", .rank = host->rank, .size = host->size,
                              .allreduce = staged_allreduce, .broadcast = staged_broadcast,
                              .allgatherv = staged_allgatherv, .ctx = s};
    return FPTQ_OK;
}

void fptq_collectives_staged_free(fptq_collectives *c)
{
    staged_ctx *s = c->ctx;
    if (s)
        free(s->buf);
    free(s);
    memset(c, 0, sizeof *c);
}
