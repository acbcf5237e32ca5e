/*
 * outputs.h: the files a lorad command writes into an output directory, named by a list
 * of patterns, so that a command can tell whether DIR already holds its outputs and can
 * remove exactly those (never a file it does not write) before it writes new ones.
 *
 * A pattern is "NAME" or "SUB/NAME" (one directory level), NAME an fnmatch(3) glob; a
 * pattern "SUB/" names the directory SUB itself, removed only once it is empty. The list
 * ends with NULL. Files written atomically pass through "NAME.tmp.PID": list both
 * (OUTPUTS_WITH_TMP) so that a killed writer's leftovers go too.
 */
#ifndef LORAD_OUTPUTS_H
#define LORAD_OUTPUTS_H

#include <stddef.h>

#define OUTPUTS_WITH_TMP(name) name, name ".tmp.*"

/* How many existing entries of DIR the patterns name (directories "SUB/" not counted);
 * the first one's relative path goes to FIRST (N bytes) when there is one. A missing DIR
 * holds none. */
int outputs_find(const char *dir, const char *const *patterns, char *first, size_t n);
/* Removes every entry of DIR the patterns name: the files, then the directories "SUB/"
 * that are left empty. -1 with an error naming the entry that could not be removed. */
int outputs_remove(const char *dir, const char *const *patterns);
/* An output of FLAG at DIR that must not hold the patterns' files: 0 when it holds none
 * or OVERWRITE is set (the caller removes them with outputs_remove once it is ready to
 * write), else -1 with the error "FLAG: DIR holds WHAT (FIRST ...)" and the hint that
 * --overwrite replaces it. */
int outputs_claim(const char *dir, const char *const *patterns, int overwrite, const char *flag, const char *what);

#endif
