/*
 * plot.h: PNG figures drawn by gnuplot (Debian's gnuplot-nox, its pngcairo terminal),
 * which lorad runs as a child process on a script it writes: bar charts and heatmaps.
 * Each PNG appears under its name only once gnuplot has finished it (written to
 * PATH.tmp.PID, then renamed); the script and gnuplot's messages pass through
 * PATH.tmp.PID.gp and PATH.tmp.PID.log, removed afterwards.
 */
#ifndef LORAD_PLOT_H
#define LORAD_PLOT_H

#include <stdint.h>

/* One series of bars: Y (N) at x = 1..N. */
struct plot_series {
    const char *title;
    const double *y;
    int32_t n;
};

/* One heatmap panel: V (ROWS, COLS) at x = 1..COLS, y = 1..ROWS (row 1 on top), its
 * colour scale [0, 1]. */
struct plot_matrix {
    const char *title;
    const double *v;
    int32_t rows, cols;
    const char *xlabel, *ylabel;
};

/* Whether gnuplot runs: 0, or -1 with an error saying how to get it. */
int plot_check(void);
/* Bars of the N series side by side at each x, under TITLE (a second line SUBTITLE, or
 * NULL), into the PNG at PATH. -1 with an error naming gnuplot or PATH. */
int plot_bars(const char *path, const char *title, const char *subtitle, const char *xlabel, const char *ylabel,
              const struct plot_series *s, int n);
/* The N heatmaps side by side under TITLE into the PNG at PATH. */
int plot_heatmaps(const char *path, const char *title, const struct plot_matrix *m, int n);

#endif
