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

#endif
