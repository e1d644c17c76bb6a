/*
 * A model's decoder layers streamed to the backend, one after another:
 * while layer l computes, layer l+1 is converted from the mmap'd weights
 * (or a checkpoint) on a loader thread into page-locked host memory and
 * copied to the backend's second buffer on its second stream. The caller
 * gets each layer twice: the host copy (the master that host-side steps such
 * as scale folds change) and the backend's copy that the forward runs.
 *
 * On host backends (the CPU) there is one buffer, loaded in the calling
 * thread when asked for, and the backend's copy is a view of the host one:
 * no memory beyond one layer, the pipeline of earlier versions. FPTQ_PREFETCH=0
 * asks for that on a device too (one buffer on the GPU, nothing overlapped).
 */
#ifndef FPTQ_LAYER_STREAM_H
#define FPTQ_LAYER_STREAM_H

#include "forward.h"

#include <pthread.h>

typedef struct fptq_layer_stream {
    const fptq_backend *be;
    const fptq_model *m;
    int slots;                     /* 1 or 2 */
    fptq_layer_weights host[2];    /* page-locked on device backends */
    fptq_dev_layer dev[2];
    int64_t holds[2];              /* the layer a slot holds, -1 when none or changed */
    int last;                      /* the slot of the layer got last */
    /* the loader thread: fills slot `loading` with layer `loading_layer` */
    pthread_t thread;
    int thread_live, loading;
    int64_t loading_layer;
    fptq_status thread_status;
    double load_seconds;           /* the loader's last conversion, for the debug log */
    char thread_error[1024];
} fptq_layer_stream;

fptq_status fptq_layer_stream_init(fptq_layer_stream *s, const fptq_backend *be, const fptq_model *m);
void fptq_layer_stream_free(fptq_layer_stream *s);

/* Layer l (loaded now unless already on its way), and then layer `next`
 * (-1: none) started in the background, into the other slot. *host and
 * *dev stay valid until the next call (which may load into this slot); the
 * caller may change both. */
fptq_status fptq_layer_stream_get(fptq_layer_stream *s, int64_t l, int64_t next, fptq_layer_weights **host,
                                  fptq_dev_layer **dev);
/* A slot to fill by other means (a stored layer for the hand-off): the
 * slot of the layer got last, which the caller is done with. */
void fptq_layer_stream_scratch(fptq_layer_stream *s, fptq_layer_weights **host, fptq_dev_layer **dev);
/* The layer most recently got was changed (quantized, folded, replaced):
 * asking for it again loads it afresh. */
void fptq_layer_stream_changed(fptq_layer_stream *s, int64_t l);

#endif
