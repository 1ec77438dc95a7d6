/* h_misc.c - handlers of /backends, /healthz, /metrics, the web page and /openapi.{yaml,json} */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/assets.h"
#include "api/guard.h"
#include "api/http.h"
#include "api/json.h"
#include "engine/kernels.h"
#include "api/json.h"

enum MHD_Result ss_h_backends(ss_req *r) { return ss_reply(r, 200, ss_resp_json(ss_json_backends())); }

enum MHD_Result ss_h_healthz(ss_req *r) {
    struct MHD_Response *resp = ss_resp_json(json_pack("{s:s}", "status", "ok"));
    if (resp) MHD_add_response_header(resp, "Cache-Control", "no-store");
    return ss_reply(r, 200, resp);
}

enum MHD_Result ss_h_metrics(ss_req *r) {
    ss_server *srv = r->srv;
    ss_strbuf sb = {0};
    ss_metrics_render(srv->metrics, &sb);

    ss_store_stats st;
    ss_store_get_stats(srv->store, &st);
    ss_metrics_value(&sb, "svdslice_slices", "gauge", "Slices stored.", (double)st.slices);
    ss_metrics_value(&sb, "svdslice_stored_bytes", "gauge", "Bytes of .svd files on disk.", (double)st.disk_bytes);
    ss_metrics_value(&sb, "svdslice_factor_cache_bytes", "gauge", "Bytes of factors held in memory.",
                     (double)st.cache_bytes);
    ss_metrics_value(&sb, "svdslice_factor_cache_hits_total", "counter", "Factor loads served from memory.",
                     (double)st.cache_hits);
    ss_metrics_value(&sb, "svdslice_factor_cache_misses_total", "counter", "Factor loads read from disk.",
                     (double)st.cache_misses);

    ss_respcache_stats rs;
    ss_respcache_get_stats(srv->rc, &rs);
    ss_metrics_value(&sb, "svdslice_response_cache_hits_total", "counter",
                     "/reconstruct answers served from the rendered-response cache.", (double)rs.hits);
    ss_metrics_value(&sb, "svdslice_response_cache_misses_total", "counter",
                     "/reconstruct lookups that missed the rendered-response cache.", (double)rs.misses);
    ss_metrics_value(&sb, "svdslice_response_cache_bytes", "gauge", "Bytes held by the response cache.",
                     (double)rs.bytes);
    ss_metrics_value(&sb, "svdslice_response_cache_entries", "gauge", "Responses held by the response cache.",
                     (double)rs.entries);

    ss_pool_stats ps;
    ss_pool_get_stats(srv->pool, &ps);
    ss_metrics_value(&sb, "svdslice_queue_depth", "gauge", "Jobs waiting for a CPU worker.", ps.depth);
    ss_metrics_value(&sb, "svdslice_queue_capacity", "gauge", "Capacity of the CPU work queue.", ps.capacity);
    ss_metrics_value(&sb, "svdslice_workers_busy", "gauge", "CPU workers running a job.", ps.busy);
    ss_metrics_value(&sb, "svdslice_workers", "gauge", "CPU worker threads.", ps.workers);
    ss_metrics_value(&sb, "svdslice_queue_rejected_total", "counter", "Jobs refused with 503 (queue full).",
                     (double)ps.rejected);
    ss_metrics_value(&sb, "svdslice_upload_buffer_bytes", "gauge",
                     "Upload body bytes held (received or queued), bounded by --upload-buffer-mb.",
                     (double)__atomic_load_n(&srv->upload_bytes, __ATOMIC_RELAXED));
    ss_metrics_value(&sb, "svdslice_upload_buffer_budget_bytes", "gauge",
                     "Bound on upload body bytes held (--upload-buffer-mb, at least one body).",
                     (double)srv->upload_budget);
    ss_metrics_value(&sb, "svdslice_memory_bytes", "gauge",
                     "Bytes reserved by uploads queued or being decoded and factorised.",
                     (double)__atomic_load_n(&srv->mem_bytes, __ATOMIC_RELAXED));
    ss_metrics_value(&sb, "svdslice_memory_budget_bytes", "gauge",
                     "Bound on those bytes (--memory-mb, at least one --max-side 16-bit upload).",
                     (double)srv->mem_budget);
    ss_metrics_value(&sb, "svdslice_upload_png_bytes_total", "counter", "PNG bytes of the uploads stored.",
                     (double)__atomic_load_n(&srv->png_bytes_total, __ATOMIC_RELAXED));
    ss_metrics_value(&sb, "svdslice_upload_file_bytes_total", "counter",
                     "Bytes of the .svd files those uploads were stored in.",
                     (double)__atomic_load_n(&srv->file_bytes_total, __ATOMIC_RELAXED));
    ss_metrics_value(&sb, "svdslice_quota_bytes", "gauge",
                     "Bound on svdslice_stored_bytes plus the volumes' stored bytes (--quota-mb); 0 = none.",
                     (double)((long long)srv->cfg->quota_mb << 20));
    ss_metrics_value(&sb, "svdslice_max_expansion", "gauge",
                     "Bound on an upload's .svd bytes over its PNG bytes (--max-expansion); 0 = none.",
                     srv->cfg->max_expansion);
    ss_metrics_value(&sb, "svdslice_inflight_requests", "gauge", "Connections suspended on a job.",
                     ss_http_inflight(r->http));
    ss_vstore_stats vs;
    ss_vstore_get_stats(srv->vstore, &vs);
    ss_metrics_value(&sb, "svdslice_volumes", "gauge", "Volumes known: queued, factorising, ready or failed.",
                     (double)vs.volumes);
    ss_metrics_value(&sb, "svdslice_volumes_ready", "gauge", "Volumes stored durably (ready).", (double)vs.ready);
    ss_metrics_value(&sb, "svdslice_volume_cache_bytes", "gauge",
                     "Decoded and rebuilt volumes held in memory (bounded like --cache-mb).", (double)vs.cache_bytes);

    ss_guard_stats cs;
    ss_http_guard_stats(r->http, &cs);
    ss_metrics_value(&sb, "svdslice_connections", "gauge", "Open connections, bounded by --max-connections.",
                     cs.connections);
    ss_metrics_value(&sb, "svdslice_connections_waiting", "gauge",
                     "Connections whose request headers have not all arrived (--header-timeout).", cs.waiting);
    ss_metrics_value(&sb, "svdslice_connections_receiving", "gauge",
                     "Connections receiving a request body (--min-rate).", cs.receiving);
    ss_metrics_header(&sb, "svdslice_connections_closed_total", "counter",
                      "Connections the server cut off: past --header-timeout, body under --min-rate, "
                      "peer gone unnoticed, evicted to admit a new one when full.");
    for (int i = 0; i < SS_GUARD_NREASONS; i++)
        ss_sb_printf(&sb, "svdslice_connections_closed_total{reason=\"%s\"} %llu\n", ss_guard_reason[i],
                     cs.closed[i]);

    if (srv->gpuq) {
        ss_gpuq_stats gs;
        ss_gpuq_get_stats(srv->gpuq, &gs);
        ss_metrics_value(&sb, "svdslice_gpu_queue_depth", "gauge", "Jobs waiting for the GPU.", gs.depth);
        ss_metrics_value(&sb, "svdslice_gpu_jobs_total", "counter", "Jobs run by the GPU queue.", (double)gs.jobs);
        ss_metrics_value(&sb, "svdslice_gpu_batches_total", "counter", "Batches launched.", (double)gs.batches);
        ss_metrics_value(&sb, "svdslice_gpu_timeouts_total", "counter", "GPU jobs past their deadline.",
                         (double)gs.timeouts);
        ss_metrics_value(&sb, "svdslice_gpu_rejected_total", "counter", "GPU jobs refused (queue full).",
                         (double)gs.rejected);
        ss_metrics_value(&sb, "svdslice_gpu_device_seconds_total", "counter", "Device time of all batches.",
                         gs.device_ms_total * 1e-3);
        /* gpuq's bins are 1, 2-3, 4-7, ..., 64-127, 128+ */
        static const double le[] = {1, 3, 7, 15, 31, 63, 127};
        unsigned long long counts[8];
        for (int i = 0; i < 8; i++) counts[i] = (unsigned long long)gs.batch_hist[i];
        ss_metrics_header(&sb, "svdslice_gpu_batch_size", "histogram", "Jobs per GPU launch.");
        ss_metrics_histogram(&sb, "svdslice_gpu_batch_size", NULL, le, counts, 7, (double)gs.batch_jobs);
    }
    if (sb.oom) {
        free(sb.buf);
        return ss_reply(r, 500, NULL);
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(sb.len, sb.buf, free);
    if (!resp) {
        free(sb.buf);
        return ss_reply(r, 500, NULL);
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    return ss_reply(r, 200, resp);
}

const char *ss_asset_content_type(const char *path) {
    static const struct { const char *ext, *type; } types[] = {
        {".html", "text/html; charset=utf-8"},   {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},                {".png", "image/png"},
        {".ico", "image/x-icon"},                 {".json", "application/json"},
        {".yaml", "application/yaml"},            {".txt", "text/plain; charset=utf-8"},
        {".woff2", "font/woff2"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i].ext)) return types[i].type;
    return "application/octet-stream";
}

const ss_asset *ss_asset_find(const char *path) {
    for (const ss_asset *a = ss_assets; a->path; a++)
        if (!strcmp(a->path, path)) return a;
    return NULL;
}

enum MHD_Result ss_h_asset(ss_req *r) {
    const char *path = r->path;
    if (!strcmp(path, "/")) path = "/index.html";
    const ss_asset *a = ss_asset_find(path);
    if (!a) return ss_reply_error(r, "not_found", "no such path: %s", path);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(a->size, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (resp) {
        MHD_add_response_header(resp, "Content-Type", ss_asset_content_type(a->path));
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
    }
    return ss_reply(r, 200, resp);
}

/* The document built at start (openapi.c): YAML as written then, JSON by the one serialiser. */
enum MHD_Result ss_h_openapi(ss_req *r) {
    const char *yaml = NULL;
    json_t *doc = ss_http_openapi(r->http, &yaml);
    struct MHD_Response *resp;
    if (!strcmp(r->path, "/openapi.json")) {
        resp = ss_resp_json(json_incref(doc));
    } else {
        resp = MHD_create_response_from_buffer(strlen(yaml), (void *)yaml, MHD_RESPMEM_PERSISTENT);
        if (resp) MHD_add_response_header(resp, "Content-Type", ss_asset_content_type(r->path));
    }
    if (resp) MHD_add_response_header(resp, "Cache-Control", "no-cache");
    return ss_reply(r, 200, resp);
}
