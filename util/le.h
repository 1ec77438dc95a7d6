/* le.h - little-endian reads and writes of the file formats' fields (.svd, .svv, content ids),
 * independent of the host's byte order. */
#ifndef SS_LE_H
#define SS_LE_H
#include <stdint.h>
#include <string.h>

static inline void ss_put_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void ss_put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint32_t ss_get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t ss_get_le64(const unsigned char *p) {
    return (uint64_t)ss_get_le32(p) | (uint64_t)ss_get_le32(p + 4) << 32;
}
static inline void ss_put_lef32(unsigned char *p, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    ss_put_le32(p, v);
}
static inline float ss_get_lef32(const unsigned char *p) {
    uint32_t v = ss_get_le32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}
static inline void ss_put_lef64(unsigned char *p, double d) {
    uint64_t v;
    memcpy(&v, &d, 8);
    ss_put_le64(p, v);
}
static inline double ss_get_lef64(const unsigned char *p) {
    uint64_t v = ss_get_le64(p);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

#endif
