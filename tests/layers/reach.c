/* reach.c - compiled by ctest against one layer's include view with -DHEADER="x/y.h":
 * a header of a layer above must not be found (the build enforces the layering). */
#include HEADER

int ss_layers_reach_probe(void);
int ss_layers_reach_probe(void) { return 0; }
