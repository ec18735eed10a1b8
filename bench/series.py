"""Solid-solution series among the min8 minerals: names RRUFF gives to members of one series.

RRUFF labels a spectrum with the species name of its specimen's composition. Members of one
solid-solution series (or one isostructural group with extensive substitution) differ by
which cation dominates a site; their Raman spectra differ by band shifts of a few cm-1 and
relative intensities that vary as much from specimen to specimen. Confusing two of them is a
different error from confusing quartz with calcite, and a geologist reads it differently:
the series is right, the composition is not (that needs microprobe or XRD).

The groups were written down from mineralogy (Deer, Howie & Zussman; the IMA group
nomenclature) *before* any model's confusions were tallied with them, and only for minerals
of the min8 selection. Minerals of one structural family that do not form a series (calcite
and dolomite, fluorapatite and the Pb apatites, enstatite and diopside, albite and
microcline) are deliberately not grouped.
"""

from __future__ import annotations

SERIES: dict[str, tuple[str, ...]] = {
    # NaAlSi3O8 - CaAl2Si2O8; labradorite is An50-70 of the same series
    "plagioclase": ("Albite", "Labradorite", "Anorthite"),
    # pyralspite and ugrandite garnets; natural garnets are mixtures of these end-members
    "garnet": ("Almandine", "Andradite", "Grossular", "Pyrope", "Spessartine"),
    # "Tourmaline" is RRUFF's name for specimens not assigned to a species
    "tourmaline": ("Dravite", "Elbaite", "Tourmaline"),
    # Ca2(Mg,Fe)5Si8O22(OH)2: Mg/(Mg+Fe) >= 0.9 is tremolite
    "tremolite-actinolite": ("Tremolite", "Actinolite"),
    # Pb5(PO4,AsO4,VO4)3Cl, the apatite-supergroup lead members
    "pyromorphite-mimetite-vanadinite": ("Pyromorphite", "Mimetite", "Vanadinite"),
    # (Ca,Mn)CO3
    "calcite-rhodochrosite": ("Calcite", "Rhodochrosite"),
    # Ca(Mg,Fe)Si2O6 - NaFeSi2O6 (aegirine-augite between)
    "diopside-aegirine": ("Diopside", "Aegirine"),
}

_SERIES_OF = {m: name for name, members in SERIES.items() for m in members}


def series_of(mineral: str) -> str | None:
    """The series a mineral belongs to, or None."""
    return _SERIES_OF.get(mineral)


def same_series(a: str, b: str) -> bool:
    """True when two different names belong to one series."""
    s = _SERIES_OF.get(a)
    return a != b and s is not None and s == _SERIES_OF.get(b)


def same_or_series(a: str, b: str) -> bool:
    """True when two names are the same mineral or members of one series."""
    return a == b or same_series(a, b)
