"""Project how long a full retrieval sweep takes with the current code.

    python3 examples/results/project_sweep_time.py SWEEP.csv RETIMED.csv FIRST_MEASURED_S

SWEEP.csv is a sweep's results (for example retrieval_setting1.csv); RETIMED.csv
holds short runs of the same models and S made with the current code, e.g.

    ./build/examples/retrieval examples/configs/retrieval_setting1.json --threads 1 \\
        --max-steps 100 --fresh --keys 20,40,...,440 --out /tmp/retimed

Each run of SWEEP.csv with S below FIRST_MEASURED_S that has a re-timed run
counts as its step count times the re-timed seconds per step. Every other run
was done with the current code and counts as measured: those at S >=
FIRST_MEASURED_S, and those of models left out of the re-timing (listed in the
output). Runs at S >= FIRST_MEASURED_S that were re-timed too are projected as
well, and the projection is printed beside the measurement as a check.
"""
import csv
import sys


def main(sweep_csv, retimed_csv, first_measured):
    seconds_per_step = {(r["model"], int(r["keys"])): float(r["seconds"]) / int(r["steps"])
                        for r in csv.DictReader(open(retimed_csv))}
    measured_total = projected_total = 0.0
    checks = []
    not_retimed = set()
    for r in csv.DictReader(open(sweep_csv)):
        key = (r["model"], int(r["keys"]))
        seconds = float(r["seconds"])
        measured_total += seconds
        projected = seconds_per_step[key] * int(r["steps"]) if key in seconds_per_step else None
        done_with_current_code = key[1] >= first_measured or projected is None
        projected_total += seconds if done_with_current_code else projected
        if projected is None and key[1] < first_measured:
            not_retimed.add(key[0])
        elif projected is not None and key[1] >= first_measured:
            checks.append((key, seconds, projected))
    print(f"sum of measured run times {measured_total / 3600:.2f} h; "
          f"projected with the re-timed code {projected_total / 3600:.2f} h")
    if not_retimed:
        print("counted as measured below S =", first_measured, "(not re-timed):", ", ".join(sorted(not_retimed)))
    if checks:
        m = sum(c[1] for c in checks)
        p = sum(c[2] for c in checks)
        print(f"check on {len(checks)} runs measured whole: {m:.0f} s measured, {p:.0f} s projected ({p / m:.2f})")


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0)
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
