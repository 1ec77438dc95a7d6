/* errors.h - the one table of the API's error codes: HTTP status, the headers each carries, and the
 * engine's SS_E* codes mapped onto them. Handlers, ss_resp_error and the OpenAPI generator read it. */
#ifndef SS_ERRORS_H
#define SS_ERRORS_H

/* The header an error response always carries. value NULL: the caller adds it (Allow lists the
 * path's methods); type is the header's OpenAPI schema type. */
typedef struct ss_api_header {
    const char *name, *value, *type, *description;
} ss_api_header;

typedef struct ss_api_error {
    const char *code;     /* "invalid_k", ... (docs/API.md's error table) */
    int status;           /* its HTTP status */
    const char *when;     /* what it means, for the OpenAPI description */
    ss_api_header header; /* name NULL: none */
} ss_api_error;

/* Every code, ended by an entry whose code is NULL. */
extern const ss_api_error ss_api_errors[];

/* The entry of code, or NULL when code is not in the table. */
const ss_api_error *ss_api_error_find(const char *code);
/* The HTTP status of code; 500 for a code not in the table (a bug, as "internal" is). */
int ss_api_status(const char *code);

/* Where an engine error came from: the same SS_E* means different things to the client. */
enum {
    SS_FROM_LOOKUP = 1, /* finding a slice by id: SS_EINVAL is "no such slice" */
    SS_FROM_BODY = 2,   /* decoding the request body: not a PNG, corrupt, too large */
    SS_FROM_QUEUE = 4,  /* handing a job to a queue: SS_EUNAVAIL is a queue that is stopping */
    SS_FROM_KERNEL = 8, /* running a backend: SS_EUNAVAIL is the backend unable to run here */
    SS_FROM_VOLUME = 16, /* decoding an uploaded NIfTI file: not NIfTI, corrupt, unsupported, too large */
};
/* The API code for engine error rc (SS_E*) raised at `from` (SS_FROM_*, or 0 for anywhere else);
 * "internal" for anything the client did not cause and cannot retry. */
const char *ss_api_code_of(int rc, int from);

#endif
