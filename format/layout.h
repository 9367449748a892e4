/*
 * layout.h: the fixed preamble of a .vbseg file (see vbseg.proto for the
 * full layout), shared by reader.c and writer.c.
 */
#ifndef VBS_FORMAT_LAYOUT_H
#define VBS_FORMAT_LAYOUT_H

#include <stdint.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "vbseg reads float32 tensors in place and needs a little-endian host"
#endif

#define VBS_PREAMBLE 32
#define VBS_DATA_ALIGN 64
static const uint8_t vbs_magic[8] = {0x89, 'V', 'B', 'S', '\r', '\n', 0x1A, '\n'};

static inline uint64_t vbs_align64(uint64_t x) { return (x + VBS_DATA_ALIGN - 1) & ~(uint64_t)(VBS_DATA_ALIGN - 1); }
static inline uint16_t vbs_rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t vbs_rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static inline uint64_t vbs_rd64(const uint8_t *p) { return (uint64_t)vbs_rd32(p) | (uint64_t)vbs_rd32(p + 4) << 32; }
static inline void vbs_wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void vbs_wr32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static inline void vbs_wr64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }

#endif
