/*
 * plot.c: gnuplot scripts for bar charts and heatmaps, and running gnuplot (plot.h).
 */
#include "plot.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"

extern char **environ;

/* S as a gnuplot single-quoted string, where '' stands for '. */
static void quoted(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        if (*s != '\n') fputc(*s, f);
    }
    fputc('\'', f);
}

/* The terminal, the output and the title lines of every figure. */
static void preamble(FILE *f, const char *png, int width, int height) {
    fprintf(f, "set encoding utf8\nset terminal pngcairo noenhanced size %d,%d font 'Sans,11'\nset output ", width,
            height);
    quoted(f, png);
    fputc('\n', f);
}

/* The first line of the file at PATH into BUF, "" when it is empty or unreadable. */
static void first_line(const char *path, char *buf, size_t n) {
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f && fgets(buf, (int)n, f)) buf[strcspn(buf, "\n")] = '\0';
    if (f) fclose(f);
}

/* Runs gnuplot with SCRIPT on its input and its messages into LOG; -1 with an error. */
static int gnuplot_run(const char *script, const char *log) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none;
    sigemptyset(&none);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, script, O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none); /* lorad blocks its stop signals; gnuplot should not */
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    pid_t pid;
    char *argv[] = {"gnuplot", NULL};
    int e = posix_spawnp(&pid, "gnuplot", &fa, &at, argv, environ), status = 0;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (e == ENOENT) {
        err_set("gnuplot", "not found on the PATH");
        return err_hint("deploy/install-deps.sh installs gnuplot-nox; --plots off leaves the plots out");
    }
    if (e) return err_set("gnuplot", "cannot start it: %s", strerror(e));
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    char line[256];
    first_line(log, line, sizeof line);
    return err_set("gnuplot", "failed (%s %d)%s%s", WIFEXITED(status) ? "exit" : "signal",
                   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), line[0] ? ": " : "", line);
}

int plot_check(void) { return gnuplot_run("/dev/null", "/dev/null"); }

/* A figure being written: the script at TMP.gp, drawing into TMP, renamed to PATH. */
struct figure {
    const char *path;
    char tmp[4096], script[4200], log[4200];
    FILE *f;
};

static int figure_open(struct figure *g, const char *path, int width, int height) {
    g->path = path;
    if (snprintf(g->tmp, sizeof g->tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof g->tmp)
        return err_set(path, "the path is too long");
    snprintf(g->script, sizeof g->script, "%s.gp", g->tmp);
    snprintf(g->log, sizeof g->log, "%s.log", g->tmp);
    g->f = fopen(g->script, "w");
    if (!g->f) return err_set(path, "cannot create %s: %s", g->script, strerror(errno));
    preamble(g->f, g->tmp, width, height);
    return 0;
}

/* Runs the script and renames the PNG into place; removes the temporary files. */
static int figure_close(struct figure *g) {
    int rc = fclose(g->f) == 0 ? 0 : err_set(g->path, "cannot write %s", g->script);
    if (rc == 0) rc = gnuplot_run(g->script, g->log);
    if (rc == 0 && rename(g->tmp, g->path) != 0) rc = err_set(g->path, "cannot rename %s: %s", g->tmp, strerror(errno));
    if (rc == 0) rc = dir_sync_parent(g->path);
    unlink(g->script);
    unlink(g->log);
    if (rc) unlink(g->tmp);
    return rc;
}

static void title_set(FILE *f, const char *title, const char *subtitle) {
    fputs("set title ", f);
    quoted(f, title);
    if (subtitle) {
        fputs(" . \"\\n\" . ", f);
        quoted(f, subtitle);
    }
    fputc('\n', f);
}

int plot_bars(const char *path, const char *title, const char *subtitle, const char *xlabel, const char *ylabel,
              const struct plot_series *s, int n) {
    struct figure g;
    if (figure_open(&g, path, 900, 520)) return -1;
    FILE *f = g.f;
    int32_t most = 1;
    for (int k = 0; k < n; k++) most = s[k].n > most ? s[k].n : most;
    const double w = 0.8 / n;
    for (int k = 0; k < n; k++) {
        fprintf(f, "$s%d << EOD\n", k);
        for (int32_t i = 0; i < s[k].n; i++) fprintf(f, "%.6f %.9g\n", i + 1 + (k - (n - 1) / 2.0) * w, s[k].y[i]);
        fputs("EOD\n", f);
    }
    title_set(f, title, subtitle);
    fputs("set xlabel ", f);
    quoted(f, xlabel);
    fputs("\nset ylabel ", f);
    quoted(f, ylabel);
    fprintf(f, "\nset style fill solid 0.85 noborder\nset boxwidth %.6f absolute\nset grid ytics\n"
               "set yrange [0:*]\nset xrange [0.4:%.1f]\nset key top right\nplot ", w, most + 0.6);
    for (int k = 0; k < n; k++) {
        fprintf(f, "%s$s%d using 1:2 with boxes lc %d title ", k ? ", " : "", k, k + 1);
        quoted(f, s[k].title);
    }
    fputc('\n', f);
    return figure_close(&g);
}

/* Tics at 1 and at the multiples of the smallest power of two that leaves at most 12. */
static void tics_set(FILE *f, char axis, int32_t n) {
    int32_t step = 1;
    while (n / step > 12) step *= 2;
    fprintf(f, "set %ctics (1", axis);
    for (int32_t t = step; t <= n; t += step)
        if (t > 1) fprintf(f, ", %d", (int)t);
    fputs(")\n", f);
}

/* One panel of plot_heatmaps. */
static void heatmap_panel(FILE *f, const struct plot_matrix *m, int k) {
    fprintf(f, "$m%d << EOD\n", k);
    for (int32_t i = 0; i < m->rows; i++)
        for (int32_t j = 0; j < m->cols; j++) fprintf(f, "%d %d %.6f\n", j + 1, i + 1, m->v[(size_t)i * m->cols + j]);
    fputs("EOD\nset title ", f);
    quoted(f, m->title);
    fputs("\nset xlabel ", f);
    quoted(f, m->xlabel);
    fputs("\nset ylabel ", f);
    quoted(f, m->ylabel);
    fprintf(f, "\nset xrange [0.5:%d.5]\nset yrange [%d.5:0.5]\n", m->cols, m->rows);
    tics_set(f, 'x', m->cols);
    tics_set(f, 'y', m->rows);
    fprintf(f, "plot $m%d using 1:2:3 with image notitle\n", k);
}

int plot_heatmaps(const char *path, const char *title, const struct plot_matrix *m, int n) {
    struct figure g;
    if (figure_open(&g, path, 620 * n, 520)) return -1;
    FILE *f = g.f;
    fputs("set palette defined (0 '#440154', 0.25 '#3b528b', 0.5 '#21918c', 0.75 '#5ec962', 1 '#fde725')\n"
          "set cbrange [0:1]\nset cblabel 'phi(i,j)'\nset tics out scale 0.5\n", f);
    fprintf(f, "set multiplot layout 1,%d title ", n);
    quoted(f, title);
    fputc('\n', f);
    for (int k = 0; k < n; k++) heatmap_panel(f, &m[k], k);
    fputs("unset multiplot\n", f);
    return figure_close(&g);
}
