"""Reading rows, models and the files kdsl ships."""
