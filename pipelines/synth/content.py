"""Words, names, numbers and sentences for the synthetic corpus.

Every generator takes a seeded `random.Random`, so a document's text depends only on its seed.
The business pools are deliberately shared by letters, memos and emails (and the science pools by
reports and publications): the classes of a confusable pair must differ in structure, not in
vocabulary, or the classifier would learn a keyword shortcut and its confidence would not vary.
"""

from __future__ import annotations

import random

FIRST_NAMES = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Nancy",
    "Matthew",
    "Lisa",
    "Anthony",
    "Betty",
    "Mark",
    "Margaret",
    "Donald",
    "Sandra",
    "Steven",
    "Ashley",
    "Paul",
    "Kimberly",
    "Andrew",
    "Emily",
    "Joshua",
    "Donna",
    "Kenneth",
    "Michelle",
    "Kevin",
    "Carol",
    "Brian",
    "Amanda",
    "George",
    "Melissa",
    "Edward",
    "Deborah",
    "Ronald",
    "Stephanie",
]
LAST_NAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Phillips",
    "Evans",
]
COMPANY_HEADS = [
    "Allied",
    "Consolidated",
    "Northern",
    "Pacific",
    "Summit",
    "Pioneer",
    "Meridian",
    "Liberty",
    "Atlas",
    "Keystone",
    "Harbor",
    "Crescent",
    "Continental",
    "Sterling",
    "Beacon",
    "Granite",
    "Horizon",
    "Lakeside",
    "Riverside",
    "Vanguard",
    "Evergreen",
]
COMPANY_TAILS = (
    "Industries",
    "Tobacco Company",
    "Research Corporation",
    "Laboratories",
    "Holdings",
    "Manufacturing Co.",
    "Associates",
    "Group, Inc.",
    "Services LLC",
    "Chemical Corp.",
    "Packaging Inc.",
    "Distributors",
    "Partners",
    "Foods Company",
    "Instruments Ltd.",
)
STREETS = (
    "Main Street",
    "Oak Avenue",
    "Park Boulevard",
    "Market Street",
    "Industrial Parkway",
    "Commerce Drive",
    "Elm Street",
    "Lake Road",
    "Washington Avenue",
    "Research Triangle Way",
    "Broadway",
    "Highland Drive",
    "Maple Lane",
    "Corporate Center",
    "Second Street",
)
CITIES = (
    ("Richmond", "VA"),
    ("Winston-Salem", "NC"),
    ("Louisville", "KY"),
    ("New York", "NY"),
    ("Chicago", "IL"),
    ("Atlanta", "GA"),
    ("Denver", "CO"),
    ("Boston", "MA"),
    ("Dallas", "TX"),
    ("Seattle", "WA"),
    ("Raleigh", "NC"),
    ("Cincinnati", "OH"),
    ("Portland", "OR"),
)
DEPARTMENTS = (
    "Marketing",
    "Research and Development",
    "Legal",
    "Finance",
    "Operations",
    "Sales",
    "Public Affairs",
    "Quality Assurance",
    "Human Resources",
    "Purchasing",
    "Product Development",
    "Regulatory Affairs",
    "Corporate Planning",
    "Manufacturing",
    "Scientific Affairs",
)
TITLES = (
    "Vice President",
    "Director",
    "Manager",
    "Senior Scientist",
    "Project Leader",
    "Analyst",
    "Coordinator",
    "Associate Counsel",
    "Brand Manager",
    "Controller",
    "Chief Chemist",
    "Regional Manager",
    "Executive Assistant",
    "Supervisor",
    "Assistant Director",
)
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

# Business prose shared by letter, memo and email (the hard trio).
BUSINESS_SUBJECTS = (
    "the quarterly review",
    "the revised budget",
    "our meeting last week",
    "the proposed program",
    "the test market results",
    "the draft agreement",
    "the schedule for next month",
    "the product launch",
    "the consumer survey",
    "the regional sales figures",
    "the research proposal",
    "the pending shipment",
    "the annual conference",
    "the attached report",
    "the new packaging design",
    "the distribution plan",
)
BUSINESS_VERBS = (
    "review",
    "discuss",
    "confirm",
    "approve",
    "consider",
    "finalize",
    "schedule",
    "forward",
    "summarize",
    "evaluate",
    "coordinate",
    "clarify",
    "address",
    "outline",
    "circulate",
)
BUSINESS_CLAUSES = (
    "as we discussed on the telephone",
    "following up on our conversation",
    "per your request",
    "in connection with the program",
    "as outlined in the attached material",
    "before the end of the month",
    "at your earliest convenience",
    "with the appropriate department",
    "prior to the next meeting",
    "in light of the recent changes",
    "according to the current schedule",
    "subject to final approval",
)
CLOSINGS = (
    "Sincerely,",
    "Very truly yours,",
    "Best regards,",
    "Regards,",
    "Thank you,",
    "Yours truly,",
    "Cordially,",
    "Thanks,",
)

# Science prose shared by scientific_report and scientific_publication.
SCI_TOPICS = (
    "nicotine metabolism",
    "particulate matter",
    "tar deposition",
    "cell proliferation",
    "aerosol composition",
    "receptor binding",
    "mutagenic activity",
    "filter efficiency",
    "smoke chemistry",
    "plasma concentrations",
    "enzyme kinetics",
    "inhalation toxicology",
    "lung function",
    "carbon monoxide uptake",
    "dose response",
    "sensory evaluation",
)
SCI_NOUNS = (
    "samples",
    "subjects",
    "specimens",
    "measurements",
    "cultures",
    "animals",
    "extracts",
    "cigarettes",
    "solutions",
    "assays",
    "controls",
    "replicates",
    "fractions",
    "observations",
)
SCI_VERBS = (
    "was determined",
    "were analyzed",
    "was measured",
    "were compared",
    "was observed",
    "were incubated",
    "was calculated",
    "were treated",
    "was evaluated",
    "were collected",
)
SCI_QUALIFIERS = (
    "using gas chromatography",
    "by standard methods",
    "at room temperature",
    "under controlled conditions",
    "as described previously",
    "in triplicate",
    "with appropriate controls",
    "over a period of six weeks",
    "by linear regression",
    "at the 95 percent confidence level",
    "following the protocol in Appendix A",
    "relative to the reference cigarette",
)
SCI_SECTIONS = (
    "Abstract",
    "Introduction",
    "Methods",
    "Materials and Methods",
    "Results",
    "Discussion",
    "Conclusions",
    "References",
    "Summary",
    "Background",
)

# Items and money: invoice and budget share them.
ITEMS = (
    "Printing services",
    "Consulting fees",
    "Laboratory supplies",
    "Freight and handling",
    "Advertising space",
    "Display materials",
    "Travel expenses",
    "Computer equipment",
    "Office supplies",
    "Research grant",
    "Packaging film",
    "Promotional items",
    "Photography",
    "Market research",
    "Equipment rental",
    "Maintenance contract",
    "Salaries and wages",
    "Employee benefits",
    "Postage",
    "Telephone",
    "Rent and utilities",
)

AD_SLOGANS = (
    "Taste the Difference",
    "Nothing Else Comes Close",
    "The Choice Is Clear",
    "Come to Where the Flavor Is",
    "Rich Taste. Smooth Finish.",
    "Discover Something New",
    "Made for Living",
    "Simply the Best",
    "Experience Real Comfort",
    "Go Further",
    "Naturally Refreshing",
    "Quality You Can Trust",
    "Now in a New Pack",
    "Limited Time Offer",
    "Save Today",
    "Your Kind of Style",
)
AD_BRANDS = (
    "MERIT",
    "SUMMIT",
    "ALPINE",
    "HORIZON",
    "VANTAGE",
    "CAPRI",
    "EAGLE",
    "RIVIERA",
    "NOVA",
    "SPRING",
    "CROWN",
    "LEGACY",
    "SILVER",
    "BREEZE",
)
NEWS_HEADS = (
    "Council Approves New Budget",
    "Company Reports Record Earnings",
    "Study Questions Health Claims",
    "Plant Expansion Brings Jobs",
    "Lawmakers Debate Tax Increase",
    "Shares Rise After Merger",
    "Local Farmers Face Dry Season",
    "Agency Issues New Guidelines",
    "Retail Sales Climb",
    "Officials Weigh Smoking Ban",
    "Researchers Announce Findings",
    "Union Reaches Agreement",
)
SPEC_SUBJECTS = (
    "Scope",
    "Materials",
    "Dimensions",
    "Tolerances",
    "Test Methods",
    "Packaging",
    "Labeling",
    "Storage",
    "Inspection",
    "Acceptance Criteria",
    "Sampling",
    "Moisture Content",
    "Tensile Strength",
    "Porosity",
    "Adhesive",
    "Print Quality",
    "Reference Documents",
)
SPEC_TERMS = (
    "shall conform to",
    "shall not exceed",
    "shall be measured",
    "shall be free of",
    "shall be supplied",
    "shall meet the requirements of",
    "shall be rejected if",
    "shall be within",
    "shall be tested",
    "shall be recorded",
)
SLIDE_TITLES = (
    "Objectives",
    "Background",
    "Key Findings",
    "Market Overview",
    "Next Steps",
    "Timeline",
    "Recommendations",
    "Agenda",
    "Budget Summary",
    "Strategy",
    "Consumer Insights",
    "Competitive Landscape",
    "Risks and Issues",
    "Program Results",
    "Q and A",
)
FORM_FIELDS = (
    "Name",
    "Address",
    "City",
    "State",
    "Zip",
    "Telephone",
    "Date",
    "Signature",
    "Title",
    "Department",
    "Account No.",
    "Social Security No.",
    "Date of Birth",
    "Employer",
    "Amount",
    "Approved by",
    "Reference No.",
    "Cost Center",
    "Project No.",
    "Fax",
)
QUESTIONS = (
    "How often do you purchase this product?",
    "How satisfied are you with the taste?",
    "Which brand do you usually buy?",
    "How would you rate the package design?",
    "Would you recommend it to a friend?",
    "How many years have you used this brand?",
    "What is your age group?",
    "Did you notice the new advertising?",
    "How likely are you to buy it again?",
    "Where do you usually shop?",
    "Please describe any changes you noticed.",
    "What did you like least?",
)
RATINGS = (
    ("Excellent", "Good", "Fair", "Poor"),
    ("Yes", "No", "Not sure"),
    ("Daily", "Weekly", "Monthly", "Rarely"),
    ("1", "2", "3", "4", "5"),
    ("Strongly agree", "Agree", "Disagree", "Strongly disagree"),
)
RESUME_SECTIONS = (
    "Education",
    "Experience",
    "Professional Experience",
    "Publications",
    "Skills",
    "Honors and Awards",
    "Memberships",
    "Personal",
    "References",
)
DEGREES = (
    "B.S., Chemistry",
    "Ph.D., Biochemistry",
    "M.B.A.",
    "B.A., Economics",
    "M.S., Pharmacology",
    "J.D.",
    "B.S., Chemical Engineering",
    "M.A., Psychology",
)
FOLDER_WORDS = (
    "CONFIDENTIAL",
    "CORRESPONDENCE",
    "FILE",
    "PROJECT",
    "MINUTES",
    "CONTRACTS",
    "RESEARCH",
    "LEGAL",
    "INVOICES",
    "PERSONNEL",
    "ARCHIVE",
    "REPORTS",
)
HANDWRITTEN_PHRASES = (
    "call back tomorrow",
    "see attached",
    "please review",
    "thanks",
    "ok to proceed",
    "need by Friday",
    "discuss at meeting",
    "file copy",
    "note the change",
    "per our talk",
    "check figures",
    "send to legal",
    "looks good",
    "revise and return",
    "urgent",
    "remind me",
    "draft only",
    "for your info",
    "approved",
    "hold for now",
)


class Text:
    """A seeded source of names, dates, numbers and prose for one document."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, seq):
        return self.rng.choice(seq)

    def person(self) -> str:
        return f"{self.pick(FIRST_NAMES)} {self.pick(LAST_NAMES)}"

    def initials_name(self) -> str:
        return f"{self.pick(FIRST_NAMES)[0]}. {self.pick(LAST_NAMES)}"

    def company(self) -> str:
        return f"{self.pick(COMPANY_HEADS)} {self.pick(COMPANY_TAILS)}"

    def email(self, name: str | None = None) -> str:
        first, _, last = (name or self.person()).partition(" ")
        domain = self.pick(COMPANY_HEADS).lower()
        return f"{first[0].lower()}{last.lower()}@{domain}.com"

    def address_lines(self) -> list[str]:
        city, state = self.pick(CITIES)
        return [
            f"{self.rng.randint(10, 9999)} {self.pick(STREETS)}",
            f"{city}, {state} {self.rng.randint(10000, 99999)}",
        ]

    def date(self) -> str:
        year = self.rng.randint(1975, 1999)
        month = self.pick(MONTHS)
        style = self.rng.random()
        if style < 0.5:
            return f"{month} {self.rng.randint(1, 28)}, {year}"
        if style < 0.8:
            return f"{MONTHS.index(month) + 1}/{self.rng.randint(1, 28)}/{year % 100:02d}"
        return f"{self.rng.randint(1, 28)} {month[:3]} {year}"

    def phone(self) -> str:
        r = self.rng
        return f"({r.randint(200, 999)}) {r.randint(200, 999)}-{r.randint(0, 9999):04d}"

    def money(self, low: float = 10, high: float = 50000) -> str:
        return f"{self.rng.uniform(low, high):,.2f}"

    def ref_no(self) -> str:
        return (
            f"{self.rng.randint(1000, 9999)}{self.rng.choice('ABCDEFGH')}{self.rng.randint(10, 99)}"
        )

    # -- prose --------------------------------------------------------------------------------
    def business_sentence(self) -> str:
        r = self.rng.random()
        subj = self.pick(BUSINESS_SUBJECTS)
        if r < 0.3:
            s = f"I would like to {self.pick(BUSINESS_VERBS)} {subj} {self.pick(BUSINESS_CLAUSES)}."
        elif r < 0.55:
            s = (
                f"Please {self.pick(BUSINESS_VERBS)} {subj} and let me know your comments "
                f"{self.pick(BUSINESS_CLAUSES)}."
            )
        elif r < 0.75:
            s = (
                f"We expect to {self.pick(BUSINESS_VERBS)} {subj} with {self.person()} "
                f"{self.pick(BUSINESS_CLAUSES)}."
            )
        elif r < 0.9:
            s = (
                f"The {self.pick(DEPARTMENTS)} group has agreed to {self.pick(BUSINESS_VERBS)} "
                f"{subj}; the cost is estimated at ${self.money(500, 90000)}."
            )
        else:
            s = f"Enclosed is a copy of {subj} for your files."
        return s[0].upper() + s[1:]

    def business_paragraph(self, lo: int = 2, hi: int = 5) -> str:
        return " ".join(self.business_sentence() for _ in range(self.rng.randint(lo, hi)))

    def science_sentence(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            s = (
                f"The {self.pick(SCI_TOPICS)} of the {self.pick(SCI_NOUNS)} {self.pick(SCI_VERBS)} "
                f"{self.pick(SCI_QUALIFIERS)}."
            )
        elif r < 0.7:
            s = (
                f"A total of {self.rng.randint(6, 480)} {self.pick(SCI_NOUNS)} "
                f"{self.pick(SCI_VERBS)} {self.pick(SCI_QUALIFIERS)}."
            )
        elif r < 0.9:
            s = (
                f"Mean values increased by {self.rng.uniform(1, 60):.1f} percent "
                f"(p < 0.{self.rng.choice(['05', '01', '001'])}) when {self.pick(SCI_TOPICS)} "
                f"{self.pick(SCI_VERBS)}."
            )
        else:
            s = (
                f"These results suggest that {self.pick(SCI_TOPICS)} is related to "
                f"{self.pick(SCI_TOPICS)}."
            )
        return s[0].upper() + s[1:]

    def science_paragraph(self, lo: int = 2, hi: int = 5) -> str:
        return " ".join(self.science_sentence() for _ in range(self.rng.randint(lo, hi)))

    def news_paragraph(self) -> str:
        city, _ = self.pick(CITIES)
        subject = self.pick(BUSINESS_SUBJECTS)
        votes = f"{self.rng.randint(5, 60)} to {self.rng.randint(1, 40)}"
        parts = [
            f"{city.upper()} - Officials said {subject} would be announced soon.",
            f"{self.person()}, a spokesman for {self.company()}, declined to comment.",
            f"The measure passed by a vote of {votes}.",
            f"Sales rose {self.rng.uniform(1, 30):.1f} percent in the last quarter, analysts said.",
            f"Critics say the plan could cost taxpayers ${self.rng.randint(2, 900)} million.",
            f'"We are pleased with the outcome," said {self.person()}.',
            f"A hearing is scheduled for {self.pick(MONTHS)} {self.rng.randint(1, 28)}.",
        ]
        self.rng.shuffle(parts)
        return " ".join(parts[: self.rng.randint(2, 5)])

    def spec_clause(self) -> str:
        return (
            f"The {self.pick(SPEC_SUBJECTS).lower()} {self.pick(SPEC_TERMS)} "
            f"{self.rng.choice(['Table', 'Section', 'Method', 'Drawing'])} "
            f"{self.rng.randint(1, 12)}.{self.rng.randint(1, 9)}"
            f"{self.rng.choice(['', ' unless otherwise specified', ' at 22 C and 60 percent RH'])}."
        )

    def bullet(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return f"{self.pick(BUSINESS_VERBS).capitalize()} {self.pick(BUSINESS_SUBJECTS)}"
        if r < 0.6:
            return f"{self.pick(SCI_TOPICS).capitalize()} up {self.rng.randint(2, 40)}%"
        if r < 0.8:
            return f"{self.pick(DEPARTMENTS)} to {self.pick(BUSINESS_VERBS)} by {self.pick(MONTHS)}"
        return f"Budget: ${self.rng.randint(1, 900)}K"
