"""The embedded demo: a small Llama trained by the project on three synthetic
task suites (arith ~ GSM8k, sql ~ Spider, facts ~ MMLU), and `tacq demo`,
which quantizes it with TACQ and the baselines and tabulates the accuracy."""
