/* bare_mhd.c - the ceiling for svdslice's cached path: libmicrohttpd answering one in-memory body */
/* Built by bench/load/run.sh with cc directly (not part of the CMake build):
 *   cc -O2 bare_mhd.c -o bare_mhd $(pkg-config --cflags --libs libmicrohttpd)
 * Usage: bare_mhd BODY_FILE [PORT]  - prints "bare_mhd listening on PORT", serves until SIGTERM.
 * Same daemon set-up as svdslice serve (one internal polling thread, epoll), so the
 * difference to svdslice's cached path is routing, parsing, cache lookup and headers. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct MHD_Response *g_resp; /* shared; MHD reference-counts it per queue */
static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls) {
    (void)cls; (void)url; (void)method; (void)version; (void)upload_data; (void)upload_data_size;
    /* Answer on the second call, as svdslice does: libmicrohttpd 0.9.75 closes the
     * connection after a response queued on a request's first call, which would make
     * this "ceiling" pay a TCP handshake per request. */
    static int first;
    if (*con_cls == NULL) {
        *con_cls = &first;
        return MHD_YES;
    }
    return MHD_queue_response(c, MHD_HTTP_OK, g_resp);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bare_mhd BODY_FILE [PORT]\n");
        return 2;
    }
    FILE *fp = fopen(argv[1], "rb");
    if (!fp) {
        perror(argv[1]);
        return 1;
    }
    static unsigned char body[16 << 20];
    size_t len = fread(body, 1, sizeof body, fp);
    fclose(fp);
    unsigned port = argc > 2 ? (unsigned)atoi(argv[2]) : 0;

    g_resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(g_resp, "Content-Type", "image/png");
    MHD_add_response_header(g_resp, "Cache-Control", "public, max-age=31536000, immutable");
    MHD_add_response_header(g_resp, "ETag", "\"bare\"");

    struct sockaddr_in addr; /* loopback only */
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, (uint16_t)port, NULL, NULL, handle, NULL,
        MHD_OPTION_CONNECTION_LIMIT, 1020u, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "bare_mhd: cannot start the daemon\n");
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("bare_mhd listening on %u\n", info ? (unsigned)info->port : port);
    fflush(stdout);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    while (!g_stop) pause();
    MHD_stop_daemon(d);
    MHD_destroy_response(g_resp);
    return 0;
}
