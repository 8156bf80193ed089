"""What runs report: the clean's run report (``run``), the blob collection's
(``collection``), the live progress of both (``progress``) and what they share
(``console``: the standard-error console and the peak memory). They record and render;
they decide nothing."""
