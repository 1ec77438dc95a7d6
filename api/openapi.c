/* openapi.c - builds the served OpenAPI document and writes it as YAML.
 *
 * api/openapi.base.json holds what only a person can write: summaries, parameters, schemas and the
 * success responses with their headers. Everything the code already knows is added here, so the
 * document cannot drift from it: every error response of each operation (statuses, codes and the
 * headers they carry, from errors.c and the routes table's error lists), the 405 with Allow, the
 * `default` (500) response, HEAD and OPTIONS operations, the embedded files, and `security` where
 * this server asks for the key. The base is JSON because there is no YAML reader in C; JSON is YAML,
 * and /openapi.yaml is written from the same tree. */
#include "api/openapi.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/assets.h"
#include "api/errors.h"
#include "api/http.h"

/* The methods the base documents by hand; HEAD and OPTIONS are generated. */
static const struct {
    int bit;
    const char *name;
} k_methods[] = {{M_GET, "get"}, {M_POST, "post"}, {M_DELETE, "delete"}};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "svdslice: openapi: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

/* j.k1.k2...; the keys end with NULL. NULL when one is missing. */
static json_t *dig(json_t *j, ...) {
    va_list ap;
    va_start(ap, j);
    for (const char *k = va_arg(ap, const char *); j && k; k = va_arg(ap, const char *))
        j = json_object_get(j, k);
    va_end(ap);
    return j;
}

/* "/slices/{id}/original" -> "SlicesIdOriginal" after prefix; "/" -> "Root". */
static void camel(const char *prefix, const char *path, char *out, size_t size) {
    size_t n = (size_t)snprintf(out, size, "%s", prefix);
    int up = 1;
    for (const char *p = path; *p && n + 1 < size; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')) {
            out[n++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
            up = 0;
        } else {
            up = 1;
        }
    }
    out[n] = 0;
    if (!strcmp(path, "/")) snprintf(out, size, "%sRoot", prefix);
}

/* {"error": {"code", "message"}} with code one of codes; for components.schemas. */
static json_t *error_schema(const char *const *codes, int n, const char *description) {
    json_t *en = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(en, json_string(codes[i]));
    return json_pack("{s:s, s:s, s:[s], s:{s:{s:s, s:[s,s], s:{s:{s:s, s:o}, s:{s:s}}}}}", "description",
                     description, "type", "object", "required", "error", "properties", "error", "type",
                     "object", "required", "code", "message", "properties", "code", "type", "string", "enum",
                     en, "message", "type", "string");
}

/* "#/components/schemas/NotFoundError", the schema of one code (made by ss_openapi_build). */
static json_t *error_ref(const char *code) {
    char name[96], ref[160];
    camel("", code, name, sizeof name);
    snprintf(ref, sizeof ref, "#/components/schemas/%sError", name);
    return json_pack("{s:s}", "$ref", ref);
}

/* The response of the codes (all of one status): their meanings, the error body restricted to
 * them, and each header a code carries, required when every one of them carries it. allow: the
 * Allow value of the path, for method_not_allowed. */
static json_t *error_response(const char *const *codes, int n, const char *allow) {
    char desc[1024] = "";
    json_t *headers = json_object();
    for (int i = 0; i < n; i++) {
        const ss_api_error *e = ss_api_error_find(codes[i]);
        size_t used = strlen(desc);
        snprintf(desc + used, sizeof desc - used, "%s`%s`: %s", i ? "; " : "", e->code, e->when);
        const ss_api_header *h = &e->header;
        if (!h->name || json_object_get(headers, h->name)) continue;
        int all = 1;
        for (int k = 0; k < n; k++) {
            const ss_api_header *o = &ss_api_error_find(codes[k])->header;
            all &= o->name && !strcmp(o->name, h->name);
        }
        const char *value = h->value ? h->value : allow;
        json_t *schema = json_pack("{s:s}", "type", h->type);
        /* Values the code fixes are checked exactly (Prism compares them). */
        if (value && !strcmp(h->type, "string")) json_object_set_new(schema, "enum", json_pack("[s]", value));
        if (value && !strcmp(h->type, "integer"))
            json_object_set_new(schema, "example", json_integer(atoi(value)));
        char hdesc[256];
        snprintf(hdesc, sizeof hdesc, "%s%s%s", h->description, all ? "" : "; with ", all ? "" : e->code);
        json_object_set_new(
            headers, h->name,
            json_pack("{s:s, s:b, s:o}", "description", hdesc, "required", all, "schema", schema));
    }
    json_t *r = json_pack("{s:s}", "description", desc);
    if (json_object_size(headers))
        json_object_set_new(r, "headers", headers);
    else
        json_decref(headers);
    json_t *schema = error_ref(codes[0]);
    if (n > 1) { /* the codes' enums do not overlap: exactly one matches */
        json_t *one = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(one, error_ref(codes[i]));
        json_decref(schema);
        schema = json_pack("{s:o}", "oneOf", one);
    }
    json_object_set_new(r, "content", json_pack("{s:{s:o}}", "application/json", "schema", schema));
    return r;
}

static int has_code(const char *const *codes, int n, const char *code) {
    for (int i = 0; i < n; i++)
        if (!strcmp(codes[i], code)) return 1;
    return 0;
}

/* Adds the error responses, `default` and `security` to op of route rt. */
static int finish_op(json_t *op, const ss_route *rt, const ss_config *cfg, const char *allow,
                     const char *where) {
    const char *codes[32];
    int n = 0;
    char list[512];
    snprintf(list, sizeof list, "%s%s method_not_allowed", rt->errors,
             rt->flags & R_BODY ? " too_large unsupported_media_type overloaded" : "");
    int auth =
        cfg->api_key[0] && ((rt->flags & R_AUTH_WRITE) || ((rt->flags & R_AUTH_READ) && cfg->auth_reads));
    if (auth) strncat(list, " unauthorized", sizeof list - strlen(list) - 1);
    /* Only a shared store (postgres) can be away; a directory store never answers it. */
    if ((rt->flags & R_STORE) && !strncmp(cfg->store, "postgres", 8))
        strncat(list, " store_unavailable", sizeof list - strlen(list) - 1);
    for (char *save = NULL, *c = strtok_r(list, " ", &save); c; c = strtok_r(NULL, " ", &save)) {
        const ss_api_error *e = ss_api_error_find(c);
        if (!e) return fail("%s lists error code %s, which api/errors.c does not have", where, c);
        if (!has_code(codes, n, e->code) && n < 32) codes[n++] = e->code;
    }
    json_t *responses = json_object_get(op, "responses");
    if (!json_is_object(responses)) return fail("%s has no responses", where);
    /* In the table's order, one response per status; internal is the `default`. */
    for (const ss_api_error *e = ss_api_errors; e->code; e++) {
        if (!has_code(codes, n, e->code) || !strcmp(e->code, "internal")) continue;
        char status[8];
        snprintf(status, sizeof status, "%d", e->status);
        if (json_object_get(responses, status)) continue; /* made with the first code of its status */
        const char *same[32];
        int m = 0;
        for (const ss_api_error *o = e; o->code; o++)
            if (o->status == e->status && has_code(codes, n, o->code)) same[m++] = o->code;
        json_object_set_new(responses, status, error_response(same, m, allow));
    }
    const char *internal = "internal";
    json_object_set_new(responses, "default", error_response(&internal, 1, NULL));
    if (auth) json_object_set_new(op, "security", json_pack("[{s:[]}]", "bearer"));
    return 0;
}

/* GET's operation for HEAD: the same status and headers, no body. */
static json_t *head_of(const json_t *get) {
    json_t *op = json_deep_copy(get);
    if (!op) return NULL;
    char id[128];
    snprintf(id, sizeof id, "%sHead", json_string_value(json_object_get(op, "operationId")));
    json_object_set_new(op, "operationId", json_string(id));
    json_object_set_new(op, "summary", json_string("GET without the body: the same status and headers"));
    json_object_del(op, "description");
    const char *code;
    json_t *resp, *responses = json_object_get(op, "responses");
    json_object_foreach(responses, code, resp) json_object_del(resp, "content");
    return op;
}

static json_t *options_op(const char *path, const char *allow, const ss_config *cfg) {
    char id[128];
    camel("options", path, id, sizeof id);
    json_t *headers =
        json_pack("{s:{s:s, s:b, s:{s:s, s:[s]}}}", "Allow", "description", "The methods the path serves",
                  "required", 1, "schema", "type", "string", "enum", allow);
    if (cfg->cors_origin[0]) {
        json_object_set_new(
            headers, "Access-Control-Allow-Methods",
            json_pack("{s:b, s:{s:s, s:[s]}}", "required", 1, "schema", "type", "string", "enum", allow));
        json_object_set_new(headers, "Access-Control-Allow-Headers",
                            json_pack("{s:b, s:{s:s}}", "required", 1, "schema", "type", "string"));
        json_object_set_new(headers, "Access-Control-Max-Age",
                            json_pack("{s:b, s:{s:s}}", "required", 1, "schema", "type", "integer"));
    }
    const char *internal = "internal";
    return json_pack("{s:[s], s:s, s:s, s:s, s:{s:{s:s, s:o}, s:o}}", "tags", "service", "summary",
                     "The methods this path serves (answers CORS preflights too)", "description",
                     "Never needs the key.", "operationId", id, "responses", "204", "description", "No body",
                     "headers", headers, "default", error_response(&internal, 1, NULL));
}

/* The path item of one embedded file of the web page (the "/{asset}" route). */
static json_t *asset_item(const ss_asset *a) {
    char id[128], type[64];
    camel("asset", a->path, id, sizeof id);
    snprintf(type, sizeof type, "%s", ss_asset_content_type(a->path));
    type[strcspn(type, ";")] = 0; /* parameters (charset) are not part of the media type key */
    return json_pack("{s:{s:[s], s:s, s:s, s:{s:{s:s, s:{s:{s:b, s:{s:s, s:[s]}}}, s:{s:{s:{s:s}}}}}}}",
                     "get", "tags", "service", "summary", "A file of the web page (embedded at build time)",
                     "operationId", id, "responses", "200", "description", "The file", "headers",
                     "Cache-Control", "required", 1, "schema", "type", "string", "enum", "no-cache",
                     "content", type, "schema", "type", "string");
}

json_t *ss_openapi_build(const ss_config *cfg) {
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)ss_openapi_base, ss_openapi_base_size, 0, &jerr);
    if (!doc) {
        fail("api/openapi.base.json:%d:%d: %s", jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    json_t *paths = json_object_get(doc, "paths");
    if (!json_is_object(paths)) goto bad;
    json_object_set_new(json_object_get(doc, "info"), "version", json_string(SVDSLICE_VERSION));
    json_t *schemas = dig(doc, "components", "schemas", NULL);
    json_t *code_enum = dig(schemas, "Error", "properties", "error", "properties", "code", NULL);
    if (!json_is_object(code_enum)) {
        fail("api/openapi.base.json has no components.schemas.Error.properties.error.properties.code");
        goto bad;
    }
    json_t *all = json_array();
    for (const ss_api_error *e = ss_api_errors; e->code; e++) {
        json_array_append_new(all, json_string(e->code));
        char name[96], desc[256];
        camel("", e->code, name, sizeof name);
        strncat(name, "Error", sizeof name - strlen(name) - 1);
        snprintf(desc, sizeof desc, "%d `%s`: %s", e->status, e->code, e->when);
        json_object_set_new(schemas, name, error_schema(&e->code, 1, desc));
    }
    json_object_set_new(code_enum, "enum", all);

    /* The "/{asset}" route serves each embedded file: one concrete path each. */
    for (const ss_asset *a = ss_assets; a->path; a++)
        if (!json_object_get(paths, a->path)) json_object_set_new(paths, a->path, asset_item(a));

    /* Every route's operations must be in the base, and only those. */
    for (int i = 0; i < ss_nroutes; i++)
        if (strcmp(ss_routes[i].pattern, "/{asset}") && !json_object_get(paths, ss_routes[i].pattern)) {
            fail("%s has a route but no path in api/openapi.base.json", ss_routes[i].pattern);
            goto bad;
        }
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item) {
        int allowed = 0;
        for (int i = 0; i < ss_nroutes; i++) {
            const char *pat = ss_routes[i].pattern;
            int asset = !strcmp(pat, "/{asset}");
            if (asset ? !ss_asset_find(path) : strcmp(pat, path) != 0) continue;
            allowed |= ss_routes[i].methods;
        }
        if (!allowed) {
            fail("%s is documented but no route serves it", path);
            goto bad;
        }
        char allow[80];
        ss_http_methods(allowed | M_OPTIONS, allow, sizeof allow);
        for (size_t m = 0; m < sizeof k_methods / sizeof k_methods[0]; m++) {
            json_t *op = json_object_get(item, k_methods[m].name);
            char where[200];
            snprintf(where, sizeof where, "%s %s", k_methods[m].name, path);
            if (!(allowed & k_methods[m].bit)) {
                if (op) {
                    fail("%s is documented but no route serves it", where);
                    goto bad;
                }
                continue;
            }
            if (!json_is_object(op)) {
                fail("%s has a route but no operation in api/openapi.base.json", where);
                goto bad;
            }
            const ss_route *rt = NULL;
            for (int i = 0; i < ss_nroutes && !rt; i++) {
                const char *pat = ss_routes[i].pattern;
                int match = !strcmp(pat, "/{asset}") ? ss_asset_find(path) != NULL : !strcmp(pat, path);
                if (match && (ss_routes[i].methods & k_methods[m].bit)) rt = &ss_routes[i];
            }
            if (finish_op(op, rt, cfg, allow, where) != 0) goto bad;
            if (k_methods[m].bit == M_GET && (rt->methods & M_HEAD))
                json_object_set_new(item, "head", head_of(op));
        }
        json_object_set_new(item, "options", options_op(path, allow, cfg));
    }
    return doc;
bad:
    json_decref(doc);
    return NULL;
}

/* ---- YAML ---------------------------------------------------------------- */

enum { YAML_WIDTH = 110 }; /* flow style only for what fits a line this long */

/* A string that reads back as itself unquoted, in YAML 1.1 (PyYAML) and 1.2 (js-yaml) alike:
 * no indicator first, no ": " or " #", nothing a reader takes for a bool, null or number. */
static int plain_ok(const char *s) {
    static const char *const words[] = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"};
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' || *s == '/' || *s == '$'))
        return 0;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (!strcasecmp(s, words[i])) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr(" _./{}()$+-,;=", *p)))
            return 0;
    return s[strlen(s) - 1] != ' ';
}

/* The next code point of UTF-8 s (valid: jansson checked it), advancing *s. */
static unsigned next_cp(const unsigned char **s) {
    const unsigned char *p = *s;
    unsigned c = *p;
    int extra = c < 0x80 ? 0 : c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
    unsigned cp = extra ? c & (0x3f >> extra) : c;
    for (int i = 1; i <= extra; i++) cp = (cp << 6) | (p[i] & 0x3f);
    *s = p + extra + 1;
    return cp;
}

/* Printable as YAML writes it in a block scalar: not a control, and not a character one of the
 * YAML versions reads as a line break (NEL, LS, PS) or a BOM. */
static int printable(unsigned cp) {
    return (cp >= 0x20 && cp != 0x7f && !(cp >= 0x80 && cp < 0xa0) && cp != 0x2028 && cp != 0x2029 &&
            cp != 0xfeff) ||
           cp == '\t';
}

static void put_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        const unsigned char *start = p;
        unsigned cp = next_cp(&p);
        if (cp == '"' || cp == '\\')
            fprintf(f, "\\%c", (char)cp);
        else if (cp == '\n')
            fputs("\\n", f);
        else if (!printable(cp) || cp == '\t')
            fprintf(f, "\\u%04x", cp);
        else
            fwrite(start, 1, (size_t)(p - start), f);
    }
    fputc('"', f);
}

/* Multi-line text as a literal block, when it reads back the same: printable, no line starting
 * the block with a space (it would set the indentation), no trailing blanks, at most one final
 * line break (chomping: "|" keeps one, "|-" none). */
static int literal_ok(const char *s) {
    size_t n = strlen(s);
    if (!strchr(s, '\n') || s[0] == ' ' || s[0] == '\n' || (n >= 2 && s[n - 1] == '\n' && s[n - 2] == '\n'))
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        if ((*p == ' ' || *p == '\t') && (p[1] == '\n' || !p[1])) return 0;
        unsigned cp = next_cp(&p);
        if (cp != '\n' && !printable(cp)) return 0;
    }
    return 1;
}

static void put_scalar(FILE *f, const json_t *v, int indent) {
    if (!json_is_string(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        char *e = s && json_is_real(v) ? strpbrk(s, "eE") : NULL;
        if (e) { /* YAML 1.1 reads a float only with a '.' and a signed exponent: 1e300 -> 1.0e+300 */
            fprintf(f, "%.*s%s%c%s%s", (int)(e - s), s, memchr(s, '.', (size_t)(e - s)) ? "" : ".0", *e,
                    e[1] == '-' || e[1] == '+' ? "" : "+", e + 1);
        } else {
            fputs(s ? s : "null", f);
        }
        free(s);
        return;
    }
    const char *s = json_string_value(v);
    if (plain_ok(s)) {
        fputs(s, f);
    } else if (literal_ok(s)) {
        size_t n = strlen(s);
        fputs(s[n - 1] == '\n' ? "|" : "|-", f);
        for (const char *line = s; *line;) {
            size_t len = strcspn(line, "\n");
            fputc('\n', f);
            if (len) fprintf(f, "%*s%.*s", indent, "", (int)len, line);
            line += len;
            if (*line) line++;
        }
    } else {
        put_quoted(f, s);
    }
}

static int is_block(const json_t *v) {
    return (json_is_object(v) && json_object_size(v)) || (json_is_array(v) && json_array_size(v));
}

/* Flow style ("{type: string}", "[a, b]"): plain scalars there must not hold flow indicators. */
static void put_flow(FILE *f, const json_t *v) {
    if (json_is_object(v)) {
        const char *key;
        const json_t *val;
        int first = 1;
        fputc('{', f);
        json_object_foreach((json_t *)v, key, val) {
            fputs(first ? "" : ", ", f);
            first = 0;
            json_t *k = json_string(key);
            put_flow(f, k);
            json_decref(k);
            fputs(": ", f);
            put_flow(f, val);
        }
        fputc('}', f);
    } else if (json_is_array(v)) {
        size_t i;
        const json_t *item;
        fputc('[', f);
        json_array_foreach(v, i, item) {
            fputs(i ? ", " : "", f);
            put_flow(f, item);
        }
        fputc(']', f);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (plain_ok(s) && !strpbrk(s, ",[]{}"))
            fputs(s, f);
        else
            put_quoted(f, s);
    } else {
        put_scalar(f, v, 0);
    }
}

static void put_node(FILE *f, const json_t *v, int indent, int inline_first);

/* After "key:" or "-" ending at column col: a scalar, or a container in flow style when it fits
 * the line, on the same line; else a block below. */
static void put_value(FILE *f, const json_t *v, int indent, int col) {
    if (is_block(v)) {
        char *flow = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&flow, &len);
        int ok = m != NULL;
        if (m) {
            put_flow(m, v);
            ok = fclose(m) == 0;
        }
        int fits = ok && flow && (size_t)col + 1 + len <= YAML_WIDTH;
        if (fits) fprintf(f, " %s\n", flow);
        free(flow);
        if (fits) return;
        fputc('\n', f);
        put_node(f, v, indent + 2, 0);
        return;
    }
    fputc(' ', f);
    if (json_is_object(v))
        fputs("{}", f);
    else if (json_is_array(v))
        fputs("[]", f);
    else
        put_scalar(f, v, indent + 2);
    fputc('\n', f);
}

/* A block mapping or sequence at indent; inline_first: its first line follows a "- ". */
static void put_node(FILE *f, const json_t *v, int indent, int inline_first) {
    int first = 1;
    if (json_is_object(v)) {
        const char *key;
        const json_t *val;
        json_object_foreach((json_t *)v, key, val) {
            if (!(first && inline_first)) fprintf(f, "%*s", indent, "");
            first = 0;
            long start = ftell(f);
            if (plain_ok(key))
                fputs(key, f);
            else
                put_quoted(f, key);
            fputc(':', f);
            put_value(f, val, indent, indent + (int)(ftell(f) - start));
        }
        return;
    }
    size_t i;
    const json_t *item;
    json_array_foreach(v, i, item) {
        if (!(first && inline_first)) fprintf(f, "%*s", indent, "");
        first = 0;
        if (json_is_object(item) && json_object_size(item)) {
            fputs("- ", f);
            put_node(f, item, indent + 2, 1);
        } else {
            fputc('-', f);
            put_value(f, item, indent, indent + 1);
        }
    }
}

char *ss_yaml_dump(const json_t *j) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    if (is_block(j))
        put_node(f, j, 0, 0);
    else {
        put_scalar(f, j, 0);
        fputc('\n', f);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
