/*
 * prep.h: `lorad prep`: turns UTF-8 text into an HDF5 token dataset of byte-level
 * tokens (one token per byte, 0..255).
 */
#ifndef LORAD_PREP_H
#define LORAD_PREP_H

#include "lorad.pb-c.h"

/* Returns 0, or -1 with an error. */
int prep_run(const Lorad__PrepSpec *spec);

#endif
