"""Results pages without the right-hand "Contents" sidebar: their tables get the width it took (~230 px).

The stylesheet book/_static/diffpath.css lets the article use that width (the theme otherwise reserves it).

Every other page keeps the sidebar (the theme's default, ``page-toc``).
"""
RESULTS_PAGES = ("book/generated/03_main_results", "book/generated/04_ablations",
                 "book/generated/05_paper_comparison")


def _wide_results(app, config):
    options = dict(config.html_theme_options or {})
    options["secondary_sidebar_items"] = {"**": ["page-toc"], **{page: [] for page in RESULTS_PAGES}}
    config.html_theme_options = options


def setup(app):
    app.connect("config-inited", _wide_results, priority=900)
    app.add_css_file("diffpath.css")  # book/_static/diffpath.css: the article takes the freed width
    return {"parallel_read_safe": True, "parallel_write_safe": True}
