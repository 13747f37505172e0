#!/usr/bin/env python3
"""Pick the small corpus we commit for one fuzz target (docs/development.md#fuzzing).

`cargo fuzz cmin` keeps every input that adds a coverage *feature* (edge x hit-count
bucket): thousands of files after a 10-minute run. We commit a few dozen: the named
seeds of fuzz/corpus/<target>/, then, greedily, the input that adds the most coverage
*edges* not yet covered (the smaller one on a tie), until no input adds an edge or the
budget (files, bytes) is spent. libFuzzer measures the edges of every input in one
set-cover merge pass without hit counts (-set_cover_merge=1 -use_counters=0
-merge_control_file, whose FT line then lists every edge of an input); this script
reads that file.

    python3 fuzz/select_corpus.py fuzz/target/x86_64-unknown-linux-gnu/release/identity \
        fuzz/corpus/identity /tmp/fuzz/identity/corpus

The first directory holds the seeds and receives the selection (files that are not
seeds are replaced); the others are candidates (e.g. the minimised working corpus).
"""

import argparse
import hashlib
import os
import subprocess
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the fuzz target built by `cargo fuzz build`")
    ap.add_argument("corpus", help="fuzz/corpus/<target>: seeds in, selection out")
    ap.add_argument("candidates", nargs="+", help="directories of inputs to choose from")
    ap.add_argument("--max-files", type=int, default=60)
    ap.add_argument("--max-bytes", type=int, default=100_000)
    a = ap.parse_args()

    # Seeds: the files of the corpus whose names are not content hashes.
    def is_hash_name(name):
        return len(name) == 40 and all(c in "0123456789abcdef" for c in name)

    a.corpus = a.corpus.rstrip("/")
    seeds = sorted(f for f in os.listdir(a.corpus) if not is_hash_name(f))
    with tempfile.TemporaryDirectory() as tmp:
        ctl = os.path.join(tmp, "control")
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        subprocess.run(
            [a.binary, "-set_cover_merge=1", "-use_counters=0", f"-merge_control_file={ctl}",
             empty, a.corpus, *a.candidates],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        files, edges, sizes = parse_control(ctl)

    data = {}
    for i, path in enumerate(files):
        with open(path, "rb") as f:
            data[i] = f.read()
    seed_paths = {os.path.join(a.corpus, s) for s in seeds}
    chosen = [i for i, p in enumerate(files) if p in seed_paths]
    covered = set().union(*(edges.get(i, set()) for i in chosen))
    total = set().union(*edges.values())
    used = sum(len(data[i]) for i in chosen)
    pool = {i for i in edges if i not in chosen}
    seen_contents = {data[i] for i in chosen}
    while len(chosen) < a.max_files and pool:
        best = max(pool, key=lambda i: (len(edges[i] - covered), -len(data[i])))
        gain = len(edges[best] - covered)
        if gain == 0:
            break
        pool.discard(best)
        if used + len(data[best]) > a.max_bytes or data[best] in seen_contents:
            continue
        chosen.append(best)
        seen_contents.add(data[best])
        covered |= edges[best]
        used += len(data[best])

    for name in os.listdir(a.corpus):
        if is_hash_name(name):
            os.remove(os.path.join(a.corpus, name))
    for i in chosen:
        if files[i] not in seed_paths:
            name = hashlib.sha1(data[i]).hexdigest()
            with open(os.path.join(a.corpus, name), "wb") as f:
                f.write(data[i])
    print(f"{len(chosen)} files ({len(seeds)} seeds), {used} bytes, "
          f"{len(covered)} of {len(total)} edges of all {len(files)} inputs")


def parse_control(path):
    """libFuzzer's merge control file: file list, then STARTED/FT/COV lines per input.
    In a set-cover merge FT holds all features of the input (COV only the new ones)."""
    with open(path) as f:
        lines = f.read().split("\n")
    n = int(lines[0])
    files = lines[2:2 + n]
    edges, sizes = {}, {}
    for line in lines[2 + n:]:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "STARTED":
            sizes[int(parts[1])] = int(parts[2])
        elif parts[0] == "FT":
            edges[int(parts[1])] = set(map(int, parts[2:]))
    for i in sizes:
        edges.setdefault(i, set())
    return files, edges, sizes


if __name__ == "__main__":
    main()
