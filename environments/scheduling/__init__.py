"""Classes and booked demos: seats from a roster, on a calendar, warmed up before they start.

``services`` holds every write (create, decide, warm up, end, seats, bookings, calendar
feeds); ``selectors`` the reads the pages and the API need; ``calendar`` the iCalendar
files. Each seat and each booked demo is an ordinary environment, requested through
``lifecycle.services`` once the class's or booking's single decision is made.
"""
