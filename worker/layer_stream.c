/*
 * Layer streaming (layer_stream.h): two slots, each a host layer and the
 * backend's copy. Getting layer l takes the slot that holds it, or loads it
 * into the slot the previous layer does not use; then the other slot is
 * marked free from this point of the backend's queue on (all of the previous
 * layer's work was queued before) and a loader thread fills it with the next
 * layer: conversion on the host, upload on the second stream once the
 * backend's work has passed the mark. Getting that layer joins the thread and
 * makes the backend's queue wait for the upload.
 */
#define _POSIX_C_SOURCE 200809L /* pthread_sigmask */
#include "layer_stream.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fptq_status fptq_layer_stream_init(fptq_layer_stream *s, const fptq_backend *be, const fptq_model *m)
{
    memset(s, 0, sizeof *s);
    s->be = be;
    s->m = m;
    s->holds[0] = s->holds[1] = -1;
    const char *env = getenv("FPTQ_PREFETCH");
    s->slots = be->host_memory || (env && strcmp(env, "0") == 0) ? 1 : 2;
    fptq_status st;
    for (int i = 0; i < s->slots; i++) {
        if (be->host_memory)
            FPTQ_TRY_GOTO(fptq_layer_alloc(&m->cfg, &s->host[i]), st, fail);
        else
            FPTQ_TRY_GOTO(fptq_layer_alloc_host(be, &m->cfg, &s->host[i]), st, fail);
        FPTQ_TRY_GOTO(fptq_dev_layer_alloc(be, &m->cfg, &s->host[i], &s->dev[i]), st, fail);
    }
    return FPTQ_OK;
fail:
    fptq_layer_stream_free(s);
    return st;
}

/* The loader thread: one layer into one slot. Its status (and message,
 * which is thread-local) comes back through the stream. */
static void *loader_main(void *arg)
{
    /* stop requests (SIGTERM, SIGUSR1) are the main thread's to take */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    fptq_layer_stream *s = arg;
    const int k = s->loading;
    const double t0 = fptq_now();
    fptq_status st = fptq_layer_load(s->m, s->loading_layer, &s->host[k]);
    if (st == FPTQ_OK)
        st = fptq_dev_layer_upload_async(&s->dev[k], &s->m->cfg, &s->host[k], k);
    if (st != FPTQ_OK) {
        snprintf(s->thread_error, sizeof s->thread_error, "%s", fptq_last_error());
        fptq_clear_error();
    }
    s->thread_status = st;
    s->load_seconds = fptq_now() - t0;
    return NULL;
}

/* Waits for the loader; its failure becomes this thread's. */
static fptq_status join_loader(fptq_layer_stream *s)
{
    if (!s->thread_live)
        return FPTQ_OK;
    const double t0 = fptq_now();
    pthread_join(s->thread, NULL);
    fptq_debug("layer %lld: converted and queued for upload in %.2f s beside the work; waited %.2f s for it",
               (long long)s->loading_layer, s->load_seconds, fptq_now() - t0);
    s->thread_live = 0;
    if (s->thread_status != FPTQ_OK) {
        s->holds[s->loading] = -1;
        return fptq_fail(s->thread_status, __FILE__, __LINE__, "%s", s->thread_error);
    }
    /* the uploads are queued: the backend's work from here on waits for them */
    s->holds[s->loading] = s->loading_layer;
    return s->be->wait_uploads();
}

fptq_status fptq_layer_stream_get(fptq_layer_stream *s, int64_t l, int64_t next, fptq_layer_weights **host,
                                  fptq_dev_layer **dev)
{
    const fptq_backend *be = s->be;
    /* the loader's layer, usually l; if it guessed wrong, what it loaded is kept */
    FPTQ_TRY(join_loader(s));
    int k = -1;
    for (int i = 0; i < s->slots; i++)
        if (s->holds[i] == l)
            k = i;
    if (k < 0) {
        /* load it here, into a slot the backend is not waiting on */
        k = s->slots == 2 ? 1 - s->last : 0;
        s->holds[k] = -1;
        FPTQ_TRY(be->uploads_sync()); /* the slot's host buffer may still be read by an upload */
        FPTQ_TRY(fptq_layer_load(s->m, l, &s->host[k]));
        FPTQ_TRY(fptq_dev_layer_upload(&s->dev[k], &s->m->cfg, &s->host[k]));
        s->holds[k] = l;
    }
    s->last = k;
    *host = &s->host[k];
    *dev = &s->dev[k];
    if (s->slots == 2 && next >= 0 && next < s->m->cfg.num_hidden_layers && next != l) {
        const int o = 1 - k;
        if (s->holds[o] != next) {
            /* every op reading slot o (the layer before l) is queued by now */
            FPTQ_TRY(be->uploads_sync());
            FPTQ_TRY(be->mark(o));
            s->holds[o] = -1;
            s->loading = o;
            s->loading_layer = next;
            s->thread_status = FPTQ_OK;
            s->thread_error[0] = '\0';
            int rc = pthread_create(&s->thread, NULL, loader_main, s);
            if (rc != 0) {
                /* no thread: it will be loaded in this one when asked for */
                fptq_debug("layer loader thread: pthread_create failed (%d); loading in line", rc);
            } else {
                s->thread_live = 1;
            }
        }
    }
    return FPTQ_OK;
}

void fptq_layer_stream_scratch(fptq_layer_stream *s, fptq_layer_weights **host, fptq_dev_layer **dev)
{
    /* the loader, if any, fills the other slot */
    s->holds[s->last] = -1;
    *host = &s->host[s->last];
    *dev = &s->dev[s->last];
}

void fptq_layer_stream_changed(fptq_layer_stream *s, int64_t l)
{
    for (int i = 0; i < s->slots; i++)
        if (s->holds[i] == l)
            s->holds[i] = -1;
}

void fptq_layer_stream_free(fptq_layer_stream *s)
{
    if (s->thread_live) {
        pthread_join(s->thread, NULL);
        s->thread_live = 0;
    }
    if (s->be && !s->be->host_memory)
        (void)s->be->uploads_sync(); /* no upload may still read a host buffer */
    for (int i = 0; i < 2; i++) {
        fptq_dev_layer_free(&s->dev[i]);
        if (s->be && s->be->host_memory)
            fptq_layer_free(&s->host[i]);
        else if (s->be)
            fptq_layer_free_host(s->be, &s->host[i]);
    }
    memset(s, 0, sizeof *s);
}
