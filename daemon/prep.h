/*
 * prep.h: `lorad prep`: turns UTF-8 text into an HDF5 token dataset of byte-level
 * tokens (one token per byte, 0..255).
 */
#ifndef LORAD_PREP_H
#define LORAD_PREP_H

#include "command.h"

/* CALL->spec[0]: a PrepSpec. Returns 0, or -1 with an error. */
command_fn prep_run;

#endif
