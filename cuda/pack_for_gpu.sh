#!/usr/bin/env bash
# pack_for_gpu.sh: what cuda/check_on_gpu.sh needs on a GPU machine that has
# CUDA, PyTorch, meson and ninja but no Eigen, nlohmann_json or doctest headers,
# no labml_nn and no internet. Run it on a machine with those headers installed
# (Debian: libeigen3-dev nlohmann-json3-dev doctest-dev) and with pip access.
#
#   bash cuda/pack_for_gpu.sh        # fills .gpu/ (ignored by git), about 12 MiB
#
#   .gpu/include/   Eigen, nlohmann and doctest headers (meson -Dheaders_dir=.gpu/include)
#   .gpu/whl/       labml-nn 0.5.1, labml 0.4.168 and the pure-Python packages they
#                   import that the GPU image lacks (gitpython, gitdb, smmap); torch,
#                   numpy, einops, pyyaml and torchvision are in the image already
#
# Then carry ".gpu" with the run (cuda/README.md, "Running the GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."

pack=.gpu
rm -rf "$pack"
mkdir -p "$pack/include" "$pack/whl"

# Headers: Eigen's own folder (not eigen3/, so <Eigen/Dense> resolves), nlohmann, doctest.
eigen_root=/usr/include/eigen3
for needed in "$eigen_root/Eigen" /usr/include/nlohmann /usr/include/doctest; do
  if [[ ! -d "$needed" ]]; then
    echo "pack_for_gpu: $needed is missing (apt-get install libeigen3-dev nlohmann-json3-dev doctest-dev)" >&2
    exit 1
  fi
done
cp -r "$eigen_root/Eigen" "$eigen_root/unsupported" "$pack/include/"
cp -r /usr/include/nlohmann /usr/include/doctest "$pack/include/"

# Wheels, exact versions: labml 0.5 lacks tracker.debug, which labml_nn's
# MultiHeadAttention calls (tests/tools/make_golden.py).
python3 -m pip download --quiet --no-deps -d "$pack/whl" \
  labml-nn==0.5.1 labml==0.4.168 gitpython==3.1.45 gitdb==4.0.12 smmap==5.0.2

echo "pack_for_gpu: $(du -sh "$pack" | cut -f1) in $pack/:"
du -sh "$pack/include" "$pack/whl"
ls "$pack/whl"
echo
echo "carry: [\".gpu\"]      command: bash cuda/check_on_gpu.sh      timeout_s: 560"
