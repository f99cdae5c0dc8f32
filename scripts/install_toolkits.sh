#!/usr/bin/env bash
# Install the toolkits whose attention modules tests/test_toolkits.py, test_family.py and
# test_state.py compare against (the `toolkits` extra of pyproject.toml). --no-deps: only
# their attention files and RNN decoders are imported (tests/toolkits*.py), which need
# nothing beyond torch, numpy, six (ESPnet) and scipy (Coqui's attention file);
# their full dependency trees are large (and some would pull another torch). Idempotent
# (an installed pinned version is left alone) and tolerant: a failed install is reported
# and the tests of that toolkit skip.
set -u
PY=${PYTHON:-python}
status=0
for pin in espnet==202511 speechbrain==1.1.2 opennmt-py==3.5.1 coqui-tts==0.28.0 \
           torchaudio==2.11.0; do
    name=${pin%%==*}
    want=${pin##*==}
    have=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
    if [ "$have" = "$want" ]; then
        echo "install_toolkits: $name $want already installed"
        continue
    fi
    if ! "$PY" -m pip install -q --no-deps "$pin"; then
        echo "install_toolkits: WARNING: $pin did not install; its tests will skip" >&2
        status=1
    fi
done
# the small pure-Python / wheel imports of those files (with their own dependencies)
for mod_pkg in six:six scipy:scipy; do
    mod=${mod_pkg%%:*}; pkg=${mod_pkg#*:}
    "$PY" -c "import $mod" 2>/dev/null || "$PY" -m pip install -q "$pkg" \
        || echo "install_toolkits: WARNING: $pkg did not install" >&2
done
# never fail the caller: missing toolkits only skip tests
[ $status -eq 0 ] || echo "install_toolkits: some toolkits missing (see above)" >&2
exit 0
