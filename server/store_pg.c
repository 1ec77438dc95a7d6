/* store_pg.c - the PostgreSQL store backend: one row per slice (metadata in columns, the .svd
 * encoding as bytea) shared by every replica; deletes reach the others by LISTEN/NOTIFY */
#include "util/error.h"
#include "engine/volume.h"
#include "server/store_backend.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Every statement and connection attempt is bounded, so an unreachable or
 * stuck PostgreSQL is a 503 within seconds, never a hung request. */
#define PG_CONNECT_TIMEOUT_S "2"
#define PG_OPTIONS "-c statement_timeout=5000 -c lock_timeout=2000 -c idle_in_transaction_session_timeout=10000"
#define PG_WAIT_CONN_S 5    /* a request waits this long for a free pooled connection */
#define PG_RETRY_MS 250     /* the watcher reconnects this often while PostgreSQL is away */
#define PG_START_WAIT_S 30  /* at start-up, how long to wait for PostgreSQL to accept connections */
#define PG_START_RETRY_MS 500
#define PG_CHANNEL "svdslice_deleted"
#define PG_ACKS "svdslice_purged"     /* "ID REPLICA": a replica's watcher dropped ID from its caches */
#define PG_WATCHER "svdslice-watcher" /* the watchers' application_name, counted by a delete */
#define PG_ACK_WAIT_S 2               /* a delete waits this long for every watcher's ack */
#define PG_VOL_TAG "v:"               /* a deleted volume's notification: "v:ID" (':' is in no id) */
/* Storing or reading a volume moves tens of MB: its transaction gets these bounds instead. */
#define PG_VOL_TIMEOUTS "SET LOCAL statement_timeout = 60000; SET LOCAL lock_timeout = 60000"
#define STR_(x) #x
#define STR(x) STR_(x)

/* Each statement with the schema version it came in: start-up runs those newer than
 * svdslice_schema.version, in one transaction, and records SCHEMA_VERSION. */
static const struct {
    int version;
    const char *sql;
} k_migrations[] = {
    {1, "CREATE TABLE IF NOT EXISTS svdslice_slices ("
        " id text PRIMARY KEY,"
        " name text NOT NULL,"
        " width integer NOT NULL, height integer NOT NULL, bit_depth integer NOT NULL,"
        " rank integer NOT NULL, nsv integer NOT NULL,"
        " created bigint NOT NULL,"            /* unix seconds, as in the encoding */
        " file_bytes bigint NOT NULL,"         /* octet_length(svd) */
        " upload_bytes bigint,"                /* PNG bytes it was uploaded as; NULL = unknown */
        " singular_values bytea NOT NULL,"     /* float32 LE, as in the encoding: the index reads only these */
        " svd bytea NOT NULL,"                 /* the whole .svd encoding, checked on every load */
        " stored_at timestamptz NOT NULL DEFAULT now())"},
    /* Float factors do not compress: skip pglz, and let substring() read only the header's pages. */
    {1, "ALTER TABLE svdslice_slices ALTER COLUMN svd SET STORAGE EXTERNAL"},
    /* Volumes: the .svv's header and index table (the first ss_svv_sections_offset bytes) with
     * the metadata in columns, and one row per section (0 the voxels, 1 + s slice s's .svd
     * encoding), deleted with their volume. */
    {2, "CREATE TABLE IF NOT EXISTS svdslice_volumes ("
        " id text PRIMARY KEY,"
        " name text NOT NULL,"
        " nx integer NOT NULL, ny integer NOT NULL, nz integer NOT NULL,"
        " datatype integer NOT NULL,"          /* NIfTI's code */
        " axis integer NOT NULL, nslices integer NOT NULL,"
        " created bigint NOT NULL,"            /* unix seconds, as in the header */
        " bytes bigint NOT NULL,"              /* the whole .svv: head and every section */
        " head bytea NOT NULL,"
        " stored_at timestamptz NOT NULL DEFAULT now())"},
    {2, "CREATE TABLE IF NOT EXISTS svdslice_volume_sections ("
        " volume_id text NOT NULL REFERENCES svdslice_volumes (id) ON DELETE CASCADE,"
        " section integer NOT NULL,"
        " data bytea NOT NULL,"
        " PRIMARY KEY (volume_id, section))"},
    {2, "ALTER TABLE svdslice_volume_sections ALTER COLUMN data SET STORAGE EXTERNAL"},
};
#define SCHEMA_VERSION 2

typedef struct pg_backend {
    ss_store_backend b; /* first: the core hands this pointer back */
    char *dsn;
    /* the pool: conns[i] NULL until first used; free[] is a stack of indexes */
    PGconn **conns;
    int *free_idx, nfree, nconns;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* the watcher */
    pthread_t watcher;
    int watcher_started, stop_fd[2];
    int watching; /* atomic */
    void (*purge)(void *arg, const char *id);
    void *purge_arg;
    void (*vpurge)(void *arg, const char *id); /* under ack_mu: set by vwatch after the watcher starts */
    void *vpurge_arg;
    char replica[17]; /* random: names this process's acks */
    /* deletes waiting for acks (under ack_mu) */
    pthread_mutex_t ack_mu;
    pthread_cond_t ack_cv;
    struct pending_del *pending;
} pg_backend;

/* A delete of this process waiting until every listening replica said it purged id. */
typedef struct pending_del {
    char id[68]; /* a slice id, or PG_VOL_TAG and a volume id */
    char acked[64][17]; /* replica tags heard from; more replicas than this wait out PG_ACK_WAIT_S */
    int nacked;
    struct pending_del *next;
} pending_del;

/* The first line of libpq's message (they end in newlines and carry details). */
static const char *pg_msg(const PGconn *c, char *buf, size_t n) {
    snprintf(buf, n, "%s", c ? PQerrorMessage(c) : "out of memory");
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

/* watcher: the listening connection, named so deletes can count the watchers, with TCP
 * keepalives so a cut network is noticed without traffic. */
static PGconn *pg_connect(const char *dsn, int watcher) {
    const char *keys[] = {"dbname", "connect_timeout", "options", "application_name", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", NULL};
    const char *vals[] = {dsn, PG_CONNECT_TIMEOUT_S, PG_OPTIONS, watcher ? PG_WATCHER : "svdslice",
                          watcher ? "5" : NULL, watcher ? "2" : NULL, watcher ? "2" : NULL, NULL};
    if (!watcher) keys[4] = NULL;
    return PQconnectdbParams(keys, vals, 1);
}

/* ---- the pool ------------------------------------------------------------------- */

/* A connected pooled connection in *idx, or SS_ESTORE / SS_EBUSY. */
static int conn_take(pg_backend *p, int *idx) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += PG_WAIT_CONN_S;
    pthread_mutex_lock(&p->mu);
    while (p->nfree == 0)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            return ss_fail(SS_EBUSY, "all %d store connections busy for %d s (--store-connections)", p->nconns,
                           PG_WAIT_CONN_S);
        }
    *idx = p->free_idx[--p->nfree];
    pthread_mutex_unlock(&p->mu);
    PGconn *c = p->conns[*idx];
    if (c && PQstatus(c) == CONNECTION_OK) return SS_OK;
    if (c) PQfinish(c);
    p->conns[*idx] = c = pg_connect(p->dsn, 0);
    if (c && PQstatus(c) == CONNECTION_OK) return SS_OK;
    char m[300];
    int rc = ss_fail(SS_ESTORE, "PostgreSQL store unreachable: %s", pg_msg(c, m, sizeof m));
    PQfinish(c);
    p->conns[*idx] = NULL;
    pthread_mutex_lock(&p->mu);
    p->free_idx[p->nfree++] = *idx;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

static void conn_give(pg_backend *p, int idx) {
    pthread_mutex_lock(&p->mu);
    p->free_idx[p->nfree++] = idx;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Runs one parameterised statement (binary results when binary). Returns the
 * result with *rc = SS_OK, or NULL and *rc: SS_ESTORE when PostgreSQL cannot
 * be reached, timed out or refused the statement. A connection found broken
 * (PostgreSQL restarted since its last use) is reconnected and the statement
 * run once more, so the first request after a restart succeeds. */
static PGresult *run(pg_backend *p, const char *sql, int n, const char *const *vals, const int *lens,
                     const int *fmts, int binary, int *rc) {
    for (int attempt = 0; attempt < 2; attempt++) {
        int idx = 0;
        if ((*rc = conn_take(p, &idx)) != SS_OK) return NULL;
        PGconn *c = p->conns[idx];
        PGresult *res = PQexecParams(c, sql, n, NULL, vals, lens, fmts, binary);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            conn_give(p, idx);
            *rc = SS_OK;
            return res;
        }
        char m[300];
        const char *why = res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(c);
        snprintf(m, sizeof m, "%s", why);
        m[strcspn(m, "\n")] = '\0';
        PQclear(res);
        int broken = PQstatus(c) != CONNECTION_OK;
        if (broken) {
            PQfinish(c);
            p->conns[idx] = NULL;
        }
        conn_give(p, idx);
        *rc = ss_fail(SS_ESTORE, "PostgreSQL store: %s", m);
        if (!broken) return NULL;
    }
    return NULL;
}

static PGresult *run1(pg_backend *p, const char *sql, const char *id, int binary, int *rc) {
    const char *v[] = {id};
    return run(p, sql, 1, v, NULL, NULL, binary, rc);
}

/* ---- the calls -------------------------------------------------------------------- */

static int pg_put(ss_store_backend *b, const char *id, const unsigned char *buf, size_t len) {
    pg_backend *p = (pg_backend *)b;
    ss_slice_info info;
    size_t sv_off = 0;
    if (len < SS_SVD_HEADER_BYTES) return ss_fail(SS_EIO, "slice %s: encoding too short", id);
    int rc = ss_store_decode_head(id, buf, len, &info, &sv_off);
    if (rc != SS_OK) return rc;
    size_t sv_len = sizeof(float) * (size_t)info.nsv;
    if (sv_off + sv_len > len || len > 0x3fffffff) return ss_fail(SS_EIO, "slice %s: encoding malformed", id);
    char w[16], h[16], d[16], r[16], ns[16], cr[24], fb[24];
    snprintf(w, sizeof w, "%d", info.width);
    snprintf(h, sizeof h, "%d", info.height);
    snprintf(d, sizeof d, "%d", info.bit_depth);
    snprintf(r, sizeof r, "%d", info.rank);
    snprintf(ns, sizeof ns, "%d", info.nsv);
    snprintf(cr, sizeof cr, "%" PRId64, info.created);
    snprintf(fb, sizeof fb, "%zu", len);
    const char *vals[] = {id, info.name, w, h, d, r, ns, cr, fb, (const char *)buf + sv_off, (const char *)buf};
    const int lens[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, (int)sv_len, (int)len};
    const int fmts[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
    /* The content id is the key: the same upload stored by two replicas at
     * once is one row, and both are told it is stored. Committed (and so
     * durable, with PostgreSQL's default synchronous_commit) when this returns. */
    PGresult *res = run(p,
                        "INSERT INTO svdslice_slices (id, name, width, height, bit_depth, rank, nsv, created,"
                        " file_bytes, singular_values, svd) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                        " ON CONFLICT (id) DO NOTHING",
                        11, vals, lens, fmts, 0, &rc);
    PQclear(res);
    return rc;
}

static int pg_get(ss_store_backend *b, const char *id, unsigned char **buf, size_t *len) {
    pg_backend *p = (pg_backend *)b;
    *buf = NULL;
    *len = 0;
    int rc;
    PGresult *res = run1(p, "SELECT svd FROM svdslice_slices WHERE id = $1", id, 1, &rc);
    if (!res) return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return ss_fail(SS_EINVAL, "no slice %s", id);
    }
    size_t n = (size_t)PQgetlength(res, 0, 0);
    *buf = malloc(n ? n : 1);
    if (!*buf) rc = ss_fail(SS_ENOMEM, "out of memory");
    else {
        memcpy(*buf, PQgetvalue(res, 0, 0), n);
        *len = n;
    }
    PQclear(res);
    return rc;
}

/* The delete and its notification commit together; then it waits (at most
 * PG_ACK_WAIT_S) until every replica listening at the time said it purged id,
 * so that once the client is told 204 no replica's cache serves the slice.
 * A replica that is not listening (reconnecting) asks the store on each
 * lookup, and forgets all it cached once it listens again. */
static int del_notified(pg_backend *p, const char *sql, const char *key, const char *id, int *gone,
                        const char *what) {
    *gone = 0;
    pending_del pd = {.nacked = 0};
    snprintf(pd.id, sizeof pd.id, "%s", key);
    pthread_mutex_lock(&p->ack_mu); /* before the delete: no ack can come before it is looked for */
    pd.next = p->pending;
    p->pending = &pd;
    pthread_mutex_unlock(&p->ack_mu);
    int rc;
    PGresult *res = run1(p, sql, id, 0, &rc);
    int n = res ? PQntuples(res) : 0, watchers = n == 1 ? atoi(PQgetvalue(res, 0, 1)) : 0;
    PQclear(res);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += PG_ACK_WAIT_S;
    pthread_mutex_lock(&p->ack_mu);
    while (pd.nacked < watchers && pthread_cond_timedwait(&p->ack_cv, &p->ack_mu, &until) != ETIMEDOUT) {
    }
    if (pd.nacked < watchers)
        fprintf(stderr,
                "svdslice: store: delete of %s %s: %d of %d replicas confirmed within %d s; the others ask"
                " the store once their watcher reconnects\n",
                what, id, pd.nacked, watchers, PG_ACK_WAIT_S);
    for (pending_del **pp = &p->pending; *pp; pp = &(*pp)->next)
        if (*pp == &pd) {
            *pp = pd.next;
            break;
        }
    pthread_mutex_unlock(&p->ack_mu);
    if (rc != SS_OK) return rc;
    *gone = 1;
    return n == 1 ? SS_OK : ss_fail(SS_EINVAL, "no %s %s", what, id); /* another replica deleted it first */
}

/* The count of listening watchers, taken in the deleting transaction: the acks to wait for. */
#define PG_WATCHERS                                                                                               \
    "(SELECT count(*) FROM pg_stat_activity WHERE application_name = '" PG_WATCHER "'"                            \
    " AND datname = current_database())"

static int pg_del(ss_store_backend *b, const char *id, int *gone) {
    return del_notified((pg_backend *)b,
                        "WITH d AS (DELETE FROM svdslice_slices WHERE id = $1 RETURNING id)"
                        " SELECT pg_notify('" PG_CHANNEL "', id), " PG_WATCHERS " FROM d",
                        id, id, gone, "slice");
}

/* From the watcher: replica `who` purged id. */
static void heard_ack(pg_backend *p, const char *payload) {
    char id[68], who[17];
    if (sscanf(payload, "%67s %16s", id, who) != 2) return;
    pthread_mutex_lock(&p->ack_mu);
    for (pending_del *d = p->pending; d; d = d->next) {
        if (strcmp(d->id, id) != 0) continue;
        int seen = 0;
        for (int i = 0; i < d->nacked; i++) seen |= !strcmp(d->acked[i], who);
        if (!seen && d->nacked < 64) snprintf(d->acked[d->nacked++], sizeof d->acked[0], "%s", who);
    }
    pthread_cond_broadcast(&p->ack_cv);
    pthread_mutex_unlock(&p->ack_mu);
}

static int pg_list(ss_store_backend *b, int (*each)(void *arg, const char *id), void *arg) {
    pg_backend *p = (pg_backend *)b;
    int rc;
    PGresult *res = run(p, "SELECT id FROM svdslice_slices", 0, NULL, NULL, NULL, 0, &rc);
    if (!res) return rc;
    for (int i = 0; rc == SS_OK && i < PQntuples(res); i++) rc = each(arg, PQgetvalue(res, i, 0));
    PQclear(res);
    return rc;
}

/* The info from the encoding's checked header (its first bytes only) and the
 * stored singular values, as the directory backend reads them. */
static int pg_info(ss_store_backend *b, const char *id, ss_slice_info *out) {
    pg_backend *p = (pg_backend *)b;
    memset(out, 0, sizeof *out);
    int rc;
    PGresult *res = run1(p,
                         "SELECT substring(svd FROM 1 FOR " STR(SS_SVD_HEADER_MAX) "), octet_length(svd),"
                         " singular_values, coalesce(upload_bytes, 0) FROM svdslice_slices WHERE id = $1",
                         id, 1, &rc);
    if (!res) return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return ss_fail(SS_EINVAL, "no slice %s", id);
    }
    unsigned char head[SS_SVD_HEADER_MAX] = {0}; /* either version's header; a version-1 file may be shorter */
    size_t hl = (size_t)PQgetlength(res, 0, 0);
    memcpy(head, PQgetvalue(res, 0, 0), hl < sizeof head ? hl : sizeof head);
    const unsigned char *f = (const unsigned char *)PQgetvalue(res, 0, 1); /* binary int4/int8, big endian */
    uint64_t file_len = 0, upload = 0;
    int flen = PQgetlength(res, 0, 1);
    for (int i = 0; i < flen; i++) file_len = file_len << 8 | f[i];
    const unsigned char *u = (const unsigned char *)PQgetvalue(res, 0, 3);
    for (int i = 0; i < PQgetlength(res, 0, 3); i++) upload = upload << 8 | u[i];
    size_t sv_off;
    rc = hl >= SS_SVD_HEADER_BYTES && hl >= ss_svd_header_bytes(head, hl)
             ? ss_store_decode_head(id, head, (size_t)file_len, out, &sv_off)
             : ss_fail(SS_ECORRUPT, "slice %s: stored encoding too short", id);
    if (rc == SS_OK && (size_t)PQgetlength(res, 0, 2) != sizeof(float) * (size_t)out->nsv)
        rc = ss_fail(SS_ECORRUPT, "slice %s: stored singular values do not match its header", id);
    if (rc == SS_OK) rc = ss_store_decode_sv(id, (const unsigned char *)PQgetvalue(res, 0, 2), out);
    if (rc == SS_OK && upload > 0) out->upload_bytes = (long long)upload; /* else the header's */
    PQclear(res);
    return rc;
}

static int pg_scan(ss_store_backend *b, int (*each)(void *arg, const ss_slice_info *info), void *arg) {
    pg_backend *p = (pg_backend *)b;
    int rc;
    PGresult *res = run(p,
                        "SELECT id, name, width, height, bit_depth, rank, nsv, created, file_bytes,"
                        " coalesce(upload_bytes, 0), get_byte(substring(svd FROM 37 FOR 1), 0)"
                        " FROM svdslice_slices",
                        0, NULL, NULL, NULL, 0, &rc);
    if (!res) return rc;
    for (int i = 0; rc == SS_OK && i < PQntuples(res); i++) {
        ss_slice_info in = {0};
        snprintf(in.id, sizeof in.id, "%s", PQgetvalue(res, i, 0));
        snprintf(in.name, sizeof in.name, "%s", PQgetvalue(res, i, 1));
        in.width = atoi(PQgetvalue(res, i, 2));
        in.height = atoi(PQgetvalue(res, i, 3));
        in.bit_depth = atoi(PQgetvalue(res, i, 4));
        in.rank = atoi(PQgetvalue(res, i, 5));
        in.nsv = atoi(PQgetvalue(res, i, 6));
        in.created = strtoll(PQgetvalue(res, i, 7), NULL, 10);
        in.file_bytes = strtoll(PQgetvalue(res, i, 8), NULL, 10);
        in.upload_bytes = strtoll(PQgetvalue(res, i, 9), NULL, 10);
        in.has_original = atoi(PQgetvalue(res, i, 10)) & 1; /* the header's flags (offset 36): bit 0 */
        rc = each(arg, &in);
    }
    PQclear(res);
    return rc;
}

static int pg_usage(ss_store_backend *b, long long *slices, long long *bytes) {
    pg_backend *p = (pg_backend *)b;
    int rc;
    PGresult *res = run(p, "SELECT count(*), coalesce(sum(file_bytes), 0) FROM svdslice_slices", 0, NULL, NULL,
                        NULL, 0, &rc);
    if (!res) return rc;
    *slices = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    *bytes = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return SS_OK;
}

static int pg_set_upload_bytes(ss_store_backend *b, const char *id, long long bytes) {
    pg_backend *p = (pg_backend *)b;
    char v[24];
    snprintf(v, sizeof v, "%lld", bytes);
    const char *vals[] = {id, v};
    int rc;
    PGresult *res = run(p, "UPDATE svdslice_slices SET upload_bytes = $2 WHERE id = $1 AND upload_bytes IS NULL", 2,
                        vals, NULL, NULL, 0, &rc);
    PQclear(res);
    return rc;
}

/* ---- volumes: a head row and one row per section ------------------------------------ */

/* A binary integer column (int4 or int8, big endian). */
static long long bin_int(const PGresult *res, int row, int col) {
    const unsigned char *v = (const unsigned char *)PQgetvalue(res, row, col);
    int n = PQgetlength(res, row, col);
    uint64_t x = n > 0 && (v[0] & 0x80) ? ~(uint64_t)0 : 0; /* sign-extend */
    for (int i = 0; i < n; i++) x = x << 8 | v[i];
    return (long long)x;
}

static uint64_t le64(const unsigned char *q) {
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = x << 8 | q[i];
    return x;
}

/* Runs one statement of a transaction on c; SS_ESTORE with the reason unless it succeeded. */
static int tx_exec(PGconn *c, const char *sql, int n, const char *const *vals, const int *lens, const int *fmts,
                   int binary, PGresult **out) {
    PGresult *res = n ? PQexecParams(c, sql, n, NULL, vals, lens, fmts, binary) : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (out) *out = res;
        else PQclear(res);
        return SS_OK;
    }
    char m[300];
    snprintf(m, sizeof m, "%s", res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(c));
    m[strcspn(m, "\n")] = '\0';
    PQclear(res);
    return ss_fail(SS_ESTORE, "PostgreSQL store: %s", m);
}

/* A pooled connection in a transaction with the volume timeouts; a connection found broken
 * (PostgreSQL restarted) is reconnected once, as run() does. */
static int tx_begin(pg_backend *p, int *idx) {
    for (int attempt = 0;; attempt++) {
        int rc = conn_take(p, idx);
        if (rc != SS_OK) return rc;
        PGconn *c = p->conns[*idx];
        rc = tx_exec(c, "BEGIN; " PG_VOL_TIMEOUTS, 0, NULL, NULL, NULL, 0, NULL);
        if (rc == SS_OK) return rc;
        int broken = PQstatus(c) != CONNECTION_OK;
        if (broken) {
            PQfinish(c);
            p->conns[*idx] = NULL;
        }
        conn_give(p, *idx);
        if (!broken || attempt) return rc;
    }
}

/* Commits (rc == SS_OK) or rolls back, and gives the connection back. */
static int tx_end(pg_backend *p, int idx, int rc) {
    PGconn *c = p->conns[idx];
    if (rc == SS_OK) rc = tx_exec(c, "COMMIT", 0, NULL, NULL, NULL, 0, NULL);
    else if (PQstatus(c) == CONNECTION_OK) PQclear(PQexec(c, "ROLLBACK"));
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        p->conns[idx] = NULL;
    }
    conn_give(p, idx);
    return rc;
}

/* The head row (metadata in columns) and one row per section, in one transaction: the
 * volume is all there or absent. The id is the key, so two replicas storing the same
 * volume at once store it once (the second waits for the first's commit, then inserts
 * nothing) and both are told it is stored. */
static int pg_vput(ss_store_backend *b, const char *id, const unsigned char *buf, size_t len) {
    pg_backend *p = (pg_backend *)b;
    size_t head = len >= SS_SVV_HEADER_BYTES ? ss_svv_head_bytes(buf, SS_SVV_HEADER_BYTES) : 0;
    ss_volume meta;
    if (!head || head > len || ss_volume_read_header(buf, head, len, &meta) != SS_OK || strcmp(meta.id, id) != 0)
        return ss_fail(SS_EIO, "volume %s: encoding malformed", id);
    char nx[16], ny[16], nz[16], dt[16], ax[16], ns[16], cr[24], by[24];
    snprintf(nx, sizeof nx, "%d", meta.nii.nx);
    snprintf(ny, sizeof ny, "%d", meta.nii.ny);
    snprintf(nz, sizeof nz, "%d", meta.nii.nz);
    snprintf(dt, sizeof dt, "%d", meta.nii.datatype);
    snprintf(ax, sizeof ax, "%d", meta.axis);
    snprintf(ns, sizeof ns, "%d", meta.nslices);
    snprintf(cr, sizeof cr, "%" PRId64, meta.created);
    snprintf(by, sizeof by, "%zu", len);
    int idx, rc = tx_begin(p, &idx);
    if (rc != SS_OK) return rc;
    PGconn *c = p->conns[idx];
    const char *hv[] = {id, meta.name, nx, ny, nz, dt, ax, ns, cr, by, (const char *)buf};
    const int hl[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (int)head};
    const int hf[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    PGresult *res = NULL;
    rc = tx_exec(c,
                 "INSERT INTO svdslice_volumes (id, name, nx, ny, nz, datatype, axis, nslices, created, bytes, head)"
                 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING RETURNING 1",
                 11, hv, hl, hf, 0, &res);
    int fresh = rc == SS_OK && PQntuples(res) == 1; /* else stored already: nothing more to write */
    PQclear(res);
    size_t at = head;
    for (int i = 0; rc == SS_OK && fresh && i <= meta.nslices; i++) {
        const unsigned char *ent = buf + SS_SVV_HEADER_BYTES + (size_t)i * SS_SVV_INDEX_ENTRY_BYTES;
        uint64_t off = le64(ent), n = le64(ent + 8);
        if (off != at || n > len - at || n > 0x3fffffff) {
            rc = ss_fail(SS_EIO, "volume %s: section %d misplaced", id, i);
            break;
        }
        char sec[16];
        snprintf(sec, sizeof sec, "%d", i);
        const char *sv[] = {id, sec, (const char *)buf + off};
        const int sl[] = {0, 0, (int)n}, sf[] = {0, 0, 1};
        rc = tx_exec(c, "INSERT INTO svdslice_volume_sections (volume_id, section, data) VALUES ($1, $2, $3)", 3,
                     sv, sl, sf, 0, NULL);
        at += n;
    }
    if (rc == SS_OK && fresh && at != len) rc = ss_fail(SS_EIO, "volume %s: sections do not end the blob", id);
    return tx_end(p, idx, rc);
}

/* The blob rejoined: the head row and the sections in order, read in one statement (one
 * snapshot, so a delete committing meanwhile gives all or nothing), checked whole. */
static int pg_vget(ss_store_backend *b, const char *id, unsigned char **buf, size_t *len) {
    pg_backend *p = (pg_backend *)b;
    *buf = NULL;
    *len = 0;
    int idx, rc = tx_begin(p, &idx);
    if (rc != SS_OK) return rc;
    const char *v[] = {id};
    PGresult *res = NULL;
    rc = tx_exec(p->conns[idx],
                 "SELECT section, data FROM (SELECT -1 AS section, head AS data FROM svdslice_volumes WHERE id = $1"
                 " UNION ALL SELECT section, data FROM svdslice_volume_sections WHERE volume_id = $1) t"
                 " ORDER BY section",
                 1, v, NULL, NULL, 1, &res);
    rc = tx_end(p, idx, rc);
    if (rc != SS_OK) {
        PQclear(res);
        return rc;
    }
    int rows = PQntuples(res);
    if (rows == 0 || bin_int(res, 0, 0) != -1) {
        PQclear(res);
        return ss_fail(SS_EINVAL, "no volume %s", id);
    }
    size_t total = 0;
    for (int i = 0; i < rows; i++) {
        if (bin_int(res, i, 0) != i - 1) {
            PQclear(res);
            return ss_fail(SS_ECORRUPT, "volume %s: section %d is missing in the store", id, i - 1);
        }
        total += (size_t)PQgetlength(res, i, 1);
    }
    unsigned char *out = malloc(total ? total : 1);
    if (!out) {
        PQclear(res);
        return ss_fail(SS_ENOMEM, "out of memory");
    }
    size_t at = 0;
    for (int i = 0; i < rows; i++) {
        memcpy(out + at, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
        at += (size_t)PQgetlength(res, i, 1);
    }
    PQclear(res);
    if (ss_volume_verify(out, total) != SS_OK) {
        char why[300];
        snprintf(why, sizeof why, "%s", ss_error());
        free(out);
        return ss_fail(SS_ECORRUPT, "volume %s in the store: %s", id, why);
    }
    *buf = out;
    *len = total;
    return SS_OK;
}

/* The head row only: the index never reads a volume's sections. */
static int pg_vhead(ss_store_backend *b, const char *id, size_t n, unsigned char *buf, size_t *len) {
    pg_backend *p = (pg_backend *)b;
    int rc;
    PGresult *res = run1(p, "SELECT head, bytes FROM svdslice_volumes WHERE id = $1", id, 1, &rc);
    if (!res) return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return ss_fail(SS_EINVAL, "no volume %s", id);
    }
    size_t hl = (size_t)PQgetlength(res, 0, 0);
    *len = (size_t)bin_int(res, 0, 1);
    if (n <= hl) memcpy(buf, PQgetvalue(res, 0, 0), n);
    PQclear(res);
    if (n > *len) return ss_fail(SS_ECORRUPT, "volume %s: %zu bytes stored, %zu asked", id, *len, n);
    if (n <= hl) return SS_OK;
    unsigned char *all = NULL; /* past the head: rare (the index asks the head only) */
    size_t al = 0;
    if ((rc = pg_vget(b, id, &all, &al)) == SS_OK) {
        if (al >= n) memcpy(buf, all, n);
        else rc = ss_fail(SS_ECORRUPT, "volume %s: shorter than recorded", id);
        *len = al;
    }
    free(all);
    return rc;
}

static int pg_vdel(ss_store_backend *b, const char *id, int *gone) {
    char key[68];
    snprintf(key, sizeof key, PG_VOL_TAG "%s", id);
    /* the sections go with the head row (ON DELETE CASCADE), in the same statement */
    return del_notified((pg_backend *)b,
                        "WITH d AS (DELETE FROM svdslice_volumes WHERE id = $1 RETURNING id)"
                        " SELECT pg_notify('" PG_CHANNEL "', '" PG_VOL_TAG "' || id), " PG_WATCHERS " FROM d",
                        key, id, gone, "volume");
}

static int pg_vlist(ss_store_backend *b, int (*each)(void *arg, const char *id), void *arg) {
    pg_backend *p = (pg_backend *)b;
    int rc;
    PGresult *res = run(p, "SELECT id FROM svdslice_volumes", 0, NULL, NULL, NULL, 0, &rc);
    if (!res) return rc;
    for (int i = 0; rc == SS_OK && i < PQntuples(res); i++) rc = each(arg, PQgetvalue(res, i, 0));
    PQclear(res);
    return rc;
}

static int pg_vscan(ss_store_backend *b,
                    int (*each)(void *arg, const char *id, const unsigned char *head, size_t head_len, size_t len),
                    void *arg) {
    pg_backend *p = (pg_backend *)b;
    int rc;
    PGresult *res = run(p, "SELECT id, head, bytes FROM svdslice_volumes", 0, NULL, NULL, NULL, 1, &rc);
    if (!res) return rc;
    for (int i = 0; rc == SS_OK && i < PQntuples(res); i++) {
        char id[65];
        snprintf(id, sizeof id, "%.*s", PQgetlength(res, i, 0), PQgetvalue(res, i, 0));
        rc = each(arg, id, (const unsigned char *)PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1),
                  (size_t)bin_int(res, i, 2));
    }
    PQclear(res);
    return rc;
}

static int pg_vusage(ss_store_backend *b, long long *volumes, long long *bytes) {
    pg_backend *p = (pg_backend *)b;
    int rc;
    PGresult *res = run(p, "SELECT count(*), coalesce(sum(bytes), 0) FROM svdslice_volumes", 0, NULL, NULL, NULL,
                        0, &rc);
    if (!res) return rc;
    *volumes = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    *bytes = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return SS_OK;
}

static void pg_vwatch(ss_store_backend *b, void (*fn)(void *arg, const char *id), void *arg) {
    pg_backend *p = (pg_backend *)b;
    pthread_mutex_lock(&p->ack_mu);
    p->vpurge = fn;
    p->vpurge_arg = arg;
    pthread_mutex_unlock(&p->ack_mu);
}

/* ---- the watcher: LISTEN for deletes -------------------------------------------------- */

/* Waits up to ms for fd to be readable or the stop pipe; returns 1 when told to stop. */
static int wait_or_stop(pg_backend *p, int fd, int ms) {
    struct pollfd pf[2] = {{p->stop_fd[0], POLLIN, 0}, {fd, POLLIN, 0}};
    poll(pf, fd >= 0 ? 2 : 1, ms);
    return (pf[0].revents & POLLIN) != 0;
}

/* Tells the volume store (once it asked, by vwatch) that volume id, or perhaps any, is gone.
 * Called under ack_mu, so vwatch(NULL) at the volume store's close waits for a call under
 * way; the volume store never holds its own lock while it waits for ack_mu (its deletes
 * release it before vdel). */
static void vpurge(pg_backend *p, const char *id) {
    pthread_mutex_lock(&p->ack_mu);
    if (p->vpurge) p->vpurge(p->vpurge_arg, id);
    pthread_mutex_unlock(&p->ack_mu);
}

static void *watcher_main(void *arg) {
    pg_backend *p = arg;
    int was_down = 0;
    for (;;) {
        PGconn *c = pg_connect(p->dsn, 1);
        PGresult *res = PQstatus(c) == CONNECTION_OK ? PQexec(c, "LISTEN " PG_CHANNEL "; LISTEN " PG_ACKS) : NULL;
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (ok) {
            /* Listening from here on; deletes made while it was not are
             * unknown, so every cached slice is forgotten, and only then are
             * caches trusted again. */
            p->purge(p->purge_arg, NULL);
            vpurge(p, NULL);
            __atomic_store_n(&p->watching, 1, __ATOMIC_SEQ_CST);
            if (was_down) fprintf(stderr, "svdslice: store: PostgreSQL reachable again; caches flushed\n");
            was_down = 0;
            for (;;) {
                if (wait_or_stop(p, PQsocket(c), 1000)) {
                    PQfinish(c);
                    return NULL;
                }
                if (!PQconsumeInput(c) || PQstatus(c) != CONNECTION_OK) break;
                PGnotify *n;
                while ((n = PQnotifies(c)) != NULL) {
                    if (!strcmp(n->relname, PG_ACKS)) {
                        heard_ack(p, n->extra);
                    } else if (ss_store_id_valid(n->extra) ||
                               (!strncmp(n->extra, PG_VOL_TAG, 2) && ss_store_id_valid(n->extra + 2))) {
                        if (n->extra[0] == PG_VOL_TAG[0] && n->extra[1] == PG_VOL_TAG[1]) vpurge(p, n->extra + 2);
                        else p->purge(p->purge_arg, n->extra);
                        /* tell the deleting replica; the notifications it brings are kept for PQnotifies */
                        char ack[90];
                        snprintf(ack, sizeof ack, "%s %s", n->extra, p->replica);
                        const char *v[] = {ack};
                        PQclear(PQexecParams(c, "SELECT pg_notify('" PG_ACKS "', $1)", 1, NULL, v, NULL, NULL, 0));
                    }
                    PQfreemem(n);
                }
            }
        }
        __atomic_store_n(&p->watching, 0, __ATOMIC_SEQ_CST);
        if (!was_down) {
            char m[300];
            fprintf(stderr, "svdslice: store: lost PostgreSQL (%s); every lookup asks it until it is back\n",
                    pg_msg(c, m, sizeof m));
        }
        was_down = 1;
        PQfinish(c);
        if (wait_or_stop(p, -1, PG_RETRY_MS)) return NULL;
    }
}

static int pg_watch(ss_store_backend *b, void (*purge)(void *arg, const char *id), void *arg) {
    pg_backend *p = (pg_backend *)b;
    p->purge = purge;
    p->purge_arg = arg;
    if (pthread_create(&p->watcher, NULL, watcher_main, p) != 0)
        return ss_fail(SS_ENOMEM, "cannot start the store's watcher thread");
    p->watcher_started = 1;
    return SS_OK;
}

static int pg_watching(ss_store_backend *b) {
    return __atomic_load_n(&((pg_backend *)b)->watching, __ATOMIC_SEQ_CST);
}

static void pg_close(ss_store_backend *b) {
    pg_backend *p = (pg_backend *)b;
    if (!p) return;
    if (p->watcher_started) {
        ssize_t w = write(p->stop_fd[1], "x", 1);
        (void)w;
        pthread_join(p->watcher, NULL);
    }
    for (int i = 0; p->conns && i < p->nconns; i++) PQfinish(p->conns[i]);
    if (p->stop_fd[0] >= 0) close(p->stop_fd[0]);
    if (p->stop_fd[1] >= 0) close(p->stop_fd[1]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->ack_mu);
    pthread_cond_destroy(&p->ack_cv);
    free(p->conns);
    free(p->free_idx);
    free(p->dsn);
    free(p);
}

/* Creates or migrates the schema; replicas starting together take turns. */
static int migrate(pg_backend *p) {
    char m[300];
    PGconn *c = pg_connect(p->dsn, 0);
    if (PQstatus(c) != CONNECTION_OK) {
        int rc = ss_fail(SS_ESTORE, "cannot connect to PostgreSQL: %s", pg_msg(c, m, sizeof m));
        PQfinish(c);
        return rc;
    }
    int rc = SS_OK;
    const char *setup[] = {
        "SELECT pg_advisory_lock(7306234157)",
        "CREATE TABLE IF NOT EXISTS svdslice_schema (version integer NOT NULL)",
    };
    for (size_t i = 0; rc == SS_OK && i < sizeof setup / sizeof *setup; i++) {
        PGresult *res = PQexec(c, setup[i]);
        if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = ss_fail(SS_EIO, "PostgreSQL schema: %s", pg_msg(c, m, sizeof m));
        PQclear(res);
    }
    int version = 0;
    if (rc == SS_OK) {
        PGresult *res = PQexec(c, "SELECT coalesce(max(version), 0) FROM svdslice_schema");
        if (PQresultStatus(res) == PGRES_TUPLES_OK) version = atoi(PQgetvalue(res, 0, 0));
        else rc = ss_fail(SS_EIO, "PostgreSQL schema: %s", pg_msg(c, m, sizeof m));
        PQclear(res);
    }
    if (rc == SS_OK && version > SCHEMA_VERSION)
        rc = ss_fail(SS_EINVAL, "PostgreSQL schema version %d is newer than this svdslice knows (%d)", version,
                     SCHEMA_VERSION);
    if (rc == SS_OK && version < SCHEMA_VERSION) {
        PGresult *res = PQexec(c, "BEGIN");
        PQclear(res);
        for (size_t i = 0; rc == SS_OK && i < sizeof k_migrations / sizeof *k_migrations; i++) {
            if (k_migrations[i].version <= version) continue;
            res = PQexec(c, k_migrations[i].sql);
            if (PQresultStatus(res) != PGRES_COMMAND_OK)
                rc = ss_fail(SS_EIO, "PostgreSQL schema: %s", pg_msg(c, m, sizeof m));
            PQclear(res);
        }
        res = PQexec(c, rc == SS_OK ? "DELETE FROM svdslice_schema; INSERT INTO svdslice_schema VALUES ("
                                      STR(SCHEMA_VERSION) "); COMMIT"
                                    : "ROLLBACK");
        if (rc == SS_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = ss_fail(SS_EIO, "PostgreSQL schema: %s", pg_msg(c, m, sizeof m));
        PQclear(res);
    }
    PQfinish(c); /* ends the session: the advisory lock goes with it */
    return rc;
}

int ss_store_pg_open(const ss_store_opts *opts, ss_store_backend **out) {
    *out = NULL;
    if (!opts->dsn || !*opts->dsn) return ss_fail(SS_EINVAL, "no PostgreSQL connection string given");
    if (PQisthreadsafe() != 1) return ss_fail(SS_EINVAL, "this libpq is not thread-safe");
    pg_backend *p = calloc(1, sizeof *p);
    if (!p) return ss_fail(SS_ENOMEM, "out of memory");
    p->b = (ss_store_backend){"postgres", pg_put, pg_get, pg_del, pg_list, pg_info, pg_close,
                              1, pg_scan, pg_usage, pg_set_upload_bytes, pg_watch, pg_watching,
                              pg_vput, pg_vget, pg_vdel, pg_vlist, pg_vhead, pg_vscan, pg_vusage, pg_vwatch};
    p->stop_fd[0] = p->stop_fd[1] = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_mutex_init(&p->ack_mu, NULL);
    pthread_cond_init(&p->ack_cv, NULL);
    unsigned long long tag = 0;
    if (getrandom(&tag, sizeof tag, GRND_NONBLOCK) != (ssize_t)sizeof tag)
        tag = (unsigned long long)getpid() << 32 ^ (unsigned long long)time(NULL);
    snprintf(p->replica, sizeof p->replica, "%016llx", tag);
    p->nconns = opts->connections > 0 ? opts->connections : 1;
    p->dsn = strdup(opts->dsn);
    p->conns = calloc((size_t)p->nconns, sizeof *p->conns);
    p->free_idx = calloc((size_t)p->nconns, sizeof *p->free_idx);
    int rc = SS_OK;
    if (!p->dsn || !p->conns || !p->free_idx) rc = ss_fail(SS_ENOMEM, "out of memory");
    if (rc == SS_OK && pipe(p->stop_fd) != 0) rc = ss_fail(SS_EIO, "pipe: %s", strerror(errno));
    for (int i = 0; rc == SS_OK && i < p->nconns; i++) p->free_idx[p->nfree++] = i;
    /* A replica may start before its PostgreSQL (both started at once): wait a
     * while for it rather than exit at once and be restarted with a backoff. */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int tries = 0; rc == SS_OK || rc == SS_ESTORE; tries++) { /* SS_ESTORE: could not connect */
        rc = migrate(p);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (rc != SS_ESTORE || now.tv_sec - t0.tv_sec >= PG_START_WAIT_S) break;
        if (tries == 0) fprintf(stderr, "svdslice: store: %s; retrying for %d s\n", ss_error(), PG_START_WAIT_S);
        struct timespec ts = {0, PG_START_RETRY_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (rc != SS_OK) {
        pg_close(&p->b);
        return rc;
    }
    *out = &p->b;
    return SS_OK;
}
