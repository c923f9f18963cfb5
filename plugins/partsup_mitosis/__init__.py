"""Mitosis datasets (icpr2012, icpr2014, amida13, midog, ami-br) and evaluation protocols."""
