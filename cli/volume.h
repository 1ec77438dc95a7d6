/* volume.h - the volume subcommands: compress-volume, reconstruct-volume, bench --volume */
#ifndef SS_CLI_VOLUME_H
#define SS_CLI_VOLUME_H

/* As the other commands (cli.h): argv[0] is the command's name; returns the exit code. */
int ss_cmd_compress_volume(int argc, char **argv);
int ss_cmd_reconstruct_volume(int argc, char **argv);

/* `svdslice bench --volume FILE`: decodes and factorises FILE (timed), then for
 * each k (ks, or the study's 170,130,90,50 below the slices' rank when nk is
 * 0) times a bare cblas_sgemm per slice of the same shapes run over the same
 * threads (GEMM only: the baseline) and every backend named (all when nb is 0)
 * rebuilding the whole volume, each checked against blas first; prints slices
 * per second, GFLOP/s (2 m n k per slice) and the ratio to the baseline (each
 * backend's runs alternate with baseline runs, the ratio is of those paired
 * medians, so a shared machine's load falls on both alike), as a
 * table or JSON (format "table" or "json"), and the .nii.gz write speed. */
int ss_bench_volume(const char *path, const int *ks, int nk, const char *const *names, int nb, int repeat,
                    int threads, const char *format);

#endif
