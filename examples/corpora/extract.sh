#!/usr/bin/env bash
# Regenerates the bundled corpora of examples/corpora/ from two Debian packages (see
# PROVENANCE.md): the King James Bible (bible-kjv, its `bible` reader and data) for the
# pretraining of the base, and Ambrose Bierce's The Devil's Dictionary (dict-devil) for
# the LoRA adaptation. Needs root for apt-get when the packages are missing.
#   kjv-train.txt   Genesis to 2 Kings, one verse a line, references stripped
#   kjv-val.txt     Ezra and Nehemiah (held out), the same format
#   devil-train.txt the dictionary's entries but every 10th, runs of spaces squeezed
#   devil-val.txt   every 10th entry (held out)
set -euo pipefail
cd "$(dirname "$0")"

for p in bible-kjv dict-devil; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p"
  fi
done

# `bible -f` prints "Ge1:1 In the beginning ..."; drop the reference.
verses() { bible -f "$1" | sed -E 's/^[1-9]?[A-Za-z]+[0-9]+:[0-9]+ //'; }
verses ge1:1-2ki25:30 > kjv-train.txt
verses ezr1:1-ne13:31 > kjv-val.txt

# The dictd file holds metadata entries (00-database-*), then the preface, then the
# entries; an entry starts with its capitalised headword and a comma ("ABSURDITY, n.").
zcat /usr/share/dictd/devil.dict.dz | awk '
  /^[A-Z][A-Z\047 -]*[A-Z]?, / { n++ }
  n == 0 { next }
  /^ abcdefghijklmnopqrstuvwxyz$/ { next }
  { print > ((n % 10 == 0) ? "devil-val.txt" : "devil-train.txt") }'
# Then runs of spaces (verse indentation, right-aligned attributions, two after a full
# stop) become one, so that a small model spends itself on words rather than padding.
sed -i -E 's/^ +//; s/ {2,}/ /g' devil-train.txt devil-val.txt
wc -c kjv-train.txt kjv-val.txt devil-train.txt devil-val.txt
