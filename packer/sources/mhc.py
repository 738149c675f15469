"""Multilingual HateCheck (Röttger et al., WOAH 2022): one functional-test CSV per language,
`hatecheck_cases_final_<language>.csv`, packed as diagnostics with the file's language."""

from __future__ import annotations

from pathlib import Path

from .common import Converted, Dataset, Images, Options, SourceError, int_or_text, read_table

# The release's file languages and their ISO 639-1 codes (each row's `lang`).
LANGUAGES = {
    "arabic": "ar",
    "dutch": "nl",
    "french": "fr",
    "german": "de",
    "hindi": "hi",
    "italian": "it",
    "mandarin": "zh",
    "polish": "pl",
    "portuguese": "pt",
    "spanish": "es",
}
PREFIX = "hatecheck_cases_final_"
# Dutch and Mandarin have no gender columns (13 columns, the others 15): only these are read.
MHC_FIELDS = ("mhc_case_id", "functionality", "label_gold", "target_ident", "templ_id", "label_annotated_maj")


def mhc(raw: Path, images: Images, options: Options) -> Converted:
    files = sorted(raw.rglob(f"{PREFIX}*.csv"), key=lambda p: (len(p.parts), str(p)))
    if not files:
        raise SourceError(f"{raw}: no Multilingual HateCheck files (looked for {PREFIX}<language>.csv)")
    seen: dict[str, Path] = {}
    rows = []
    for path in files:
        language = path.stem.removeprefix(PREFIX).lower()
        if language not in LANGUAGES:
            raise SourceError(f"{path}: unknown language {language!r} (known: {', '.join(LANGUAGES)})")
        if language in seen:
            raise SourceError(f"{path}: a second {language} file (the first: {seen[language]})")
        seen[language] = path
        table = read_table(path)
        table.need("test_case", *MHC_FIELDS)
        for number, r in table.rows:
            case = r["mhc_case_id"].strip()
            if not case:
                raise SourceError(f"{path}: line {number}: field 'mhc_case_id': empty")
            labels: dict = {k: r[k].strip() or None for k in MHC_FIELDS}
            labels["templ_id"] = int_or_text(r["templ_id"])
            labels["language"] = language
            rows.append(
                {
                    "id": f"mhc_{case}",
                    "dataset": "mhc",
                    "split": "test",
                    "image_path": None,
                    # Some cases carry outer spaces in the release: the text is the case, stripped.
                    "text_raw": r["test_case"].strip(),
                    "labels_raw": labels,
                    "lang": LANGUAGES[language],
                }
            )
    notes = [f"{len(seen)} language(s): {', '.join(sorted(seen))}"]
    return Converted(rows, notes=notes)


DATASETS = [Dataset("mhc", mhc)]
