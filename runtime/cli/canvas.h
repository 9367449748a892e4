/*
 * canvas.h: an RGB canvas with filled rectangles and bitmap text (canvas.c).
 */
#ifndef VBS_CLI_CANVAS_H
#define VBS_CLI_CANVAS_H

typedef struct { int w, h; unsigned char *px; } canvas; /* rows top to bottom, 3 bytes a pixel */

enum { ADVANCE = 6, TS = 2 /* the scale of most text: 10x16 pixel glyphs */ };

/* The 5x8 glyph of character c: 40 chars, '#' set, row by row ('?' for any byte outside printable ASCII). */
const char *preview_glyph(int c);
/* A w x h rectangle at (x, y), clipped to the canvas. */
void canvas_fill(canvas *c, int x, int y, int w, int h, const unsigned char rgb[3]);
/* The width in pixels of s at scale (each font pixel scale x scale). */
int canvas_text_width(const char *s, int scale);
/* s with its top-left corner at (x, y). */
void canvas_text(canvas *c, int x, int y, int s, const char *str, const unsigned char rgb[3]);

/* Label colours, in order of the non-background labels (BraTS 1, 2, 4:
 * necrosis red, oedema green, enhancing yellow). */
extern const unsigned char canvas_palette[12][3];

/* A colour map: t in [0, 1] (clamped) to RGB. */
typedef void (*canvas_cmap)(float t, unsigned char out[3]);
/* Ticks for a colour scale from 0 to top: a step of 1, 2, 2.5 or 5 x 10^k,
 * at most 5 steps, ending on top when a step divides it; decimals: as many
 * as the step needs (0.05 -> 2, 2.5 -> 1). */
void canvas_ticks(double top, double *step, int *decimals);
/* A colour bar for values 0..top: cmap's gradient, w x h at (x, y), then a
 * 5-pixel tick below it at every multiple of step up to top, each with its
 * value (printed with decimals) centred under it at y + h + 7. */
void canvas_colour_bar(canvas *c, int x, int y, int w, int h, canvas_cmap cmap, double top, double step, int decimals,
                       const unsigned char rgb[3]);

#endif
