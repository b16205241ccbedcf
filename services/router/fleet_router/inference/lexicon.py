"""The words and phrases inference weighs, as data.

Each table maps a weight to ``|``-separated terms. A term is one token or a phrase of
tokens as ``features.tokens`` produces them (lower case, split at anything but letters and
digits, ``c++`` and ``c#`` kept whole), so ``lock-free`` is written ``lock free``. A
trailing ``*`` also matches the usual inflections (``prove*``: proves, proved, proving).

Task-type weights are per type: ``TYPE_TERMS`` count wherever they appear in the request;
``LEAD_TERMS`` only among its first words (the imperative: "Complete the sentence" is a
completion, "a complete compiler" is not); ``CODE_TERMS`` only when code is attached
("improve this" + code is a refactor, "improve my essay" is not). Complexity terms move
the complexity score up (``HARD_TERMS``) or down (``EASY_TERMS``).

Weights are hand-set: ~4 names the task outright, ~2 is good evidence, ~1 a hint; they
were tuned on the dev split of the evaluation set (bench/fleet_bench/data/inference).
"""

from __future__ import annotations

from fleet_shared.schema import TaskType

TYPES: tuple[TaskType, ...] = (
    TaskType.CODE_GENERATION,
    TaskType.CODE_REFACTOR,
    TaskType.REASONING,
    TaskType.ANALYSIS,
    TaskType.COMPLETION,
    TaskType.CREATIVE,
)

Table = dict[float, str]


def word_set(spec: str) -> frozenset[str]:
    """The words of a space-separated list."""
    return frozenset(spec.split())


TYPE_TERMS: dict[TaskType, Table] = {
    TaskType.CODE_GENERATION: {
        4.0: "implement* | function* | regex | regexp | fizzbuzz | dockerfile | leetcode | unit test* | write code"
        " | hello world | one liner | shell script | rest api | web app | code snippet | write a program"
        " | list comprehension | bash command | shell command | terminal command"
        " | command to | cli command | git command | worker pool | graceful shutdown | developer | programmer"
        " | software engineer | coding assistant | func | funcs | func to | check if | check whether | boilerplate | scaffold | skeleton code"
        " | ansible | playbook | nginx | helm chart | makefile | cron job | systemd | manifest | github actions"
        " | ci pipeline | scikit learn | sklearn | pytorch | tensorflow | keras | matplotlib | seaborn | tkinter"
        " | pygame | arduino | swiftui | android app | ios app | webhook | integration test* | contact form"
        " | login form | html for | code for | code to | program to | function to | script to | script that"
        " | function that | class that | database schema | stored procedure | bfs | dfs | dijkstra"
        " | linked list | binary tree | sorting algorithm | hackerrank",
        3.0: "script* | program* | snippet | endpoint* | sql | code | coding | compiler | parser | interpreter"
        " | method* | subroutine | lambda | in go | in c | in python | in javascript | in java | in rust"
        " | in typescript | in c++ | in c# | in kotlin | in php | in ruby | in swift | in haskell | in bash"
        " | command line | data structure* | scraper | crawler | trie | lru | hashmap | struct | enum* | crud"
        " | webpage | debounce | cli | raytracer | ray tracer | solver | dynamic programming | bitmask*"
        " | test harness | harness | matching engine | html page | css rule | funcion | fonction | funktion"
        " | codigo | programa",
        2.0: "python | javascript | typescript | golang | rust | kotlin | haskell | php | java | c++ | c# | bash"
        " | powershell | html | css | jsx | cuda | numpy | pytest | junit | elixir | erlang | clojure | scala | perl"
        " | lua | fortran | cobol | matlab | verilog | solidity | dart | flutter | react | vue | angular | svelte"
        " | django | flask | fastapi | laravel | rails | terraform | graphql | grpc | websocket* | oauth | jwt"
        " | sqlite | mysql | backend | frontend | swift | assembly | x86 | opengl | heuristic | order book | api*",
        1.5: "class* | algorithm* | query | queries | node | nodejs | jquery | kubernetes | k8s | yaml | json | docker"
        " | postgresql | postgres | mongodb | redis | kafka | component* | website | app | module* | plugin* | bot"
        " | parse* | compile* | async | await | goroutine* | mutex* | thread* | recursion | recursive | iterate*"
        " | loop* | array* | string* | boolean | dict | dictionary | tree | heap | queue | stack | cache | binary"
        " | sort* | return* | parameter* | variable* | integers | library | package | sdk | server | kernel"
        " | framework | dockerize | microservice* | spring | database | schema | csv | xml | http"
        " | socket* | tcp | udp | callback* | interface* | generic* | big o | o n",
        1.0: "input* | output | test* | client | design | develop* | build* | create* | generate* | arguments"
        " | deploy* | install* | config | form | forms | model | mock | fixture | automate* | gui | chart"
        " | plot a | bar chart | dashboard | machine learning | preprocessing | cross validation | model selection"
        " | predicting | feature engineering | training loop | train a model"
        " | engine | service | system | tool | prints | print* | datetime | timestamp | regexes",
        0.5: "write",
    },
    TaskType.CODE_REFACTOR: {
        8.0: "refactor*",
        5.0: "clean up | tidy up | code smell* | technical debt | god class | strangler | more pythonic | restructure*"
        " | update this | python 2 | to python 3",
        4.0: "pythonic | idiomatic | modernize* | modernise* | readability | maintainability"
        " | without changing | keeping its behaviour | keeping its behavior | preserving its | same behaviour"
        " | same behavior | behaviour identical | behavior identical | backwards compatible | backward compatible"
        " | single responsibility | dry principle | dead code | lint* | linter",
        3.0: "rename* | readable | maintainable | legacy | cleaner | tidy | indentation | deduplicate | duplicated"
        " | duplication | decompose | reorganize | reorganise | code review | composition instead of inheritance"
        " | type hints | type annotations | migrate* | deprecated | port this | convert this"
        " | simplify this | optimize this | improve this | fix this | this code | this function | this class"
        " | this snippet | this script | this module | this method | this loop | this query | this component"
        " | this program | this implementation | the code below | following code | my code | our code | this sql"
        " | this stored procedure | these functions | this test suite | this codebase | this service"
        " | this parser | this page | clean code | pep 8 | pep8 | eslint | modularize | decouple | extract method"
        " | tech debt | more readable | less verbose | design pattern*",
        2.0: "simplify* | optimize* | optimise* | rewrite* | improve* | upgrade* | buggy | bug | fix | n+1 | vectorized"
        " | vectorize | memory leak | leaks | deadlock | data race | spaghetti | monolith* | callback hell",
        1.0: "convert* | port | extract* | split | replace* | fix* | bugs | broken | slow | faster | cleanup"
        " | existing | codebase | behaviour | behavior",
    },
    TaskType.REASONING: {
        5.0: "prove* | proof* | show that | solve for | how many ways | in how many | is it possible | who owns"
        " | one each | converse",
        4.0: "theorem | lemma | probability | riddle | puzzle | syllogism | deduce | induction | equation*"
        " | integral | derivative | square root | prime number | prime numbers | expected value | logic puzzle"
        " | next in the sequence | what comes next in | integer solutions | divisible | modulo | gcd | lcm"
        " | twice as many | half as many | how much more | how many more | percent off | always even | always odd"
        " | is always | is never",
        2.5: "how many",
        3.0: "solve* | calculate* | how much | how far | how long does it take | derive* | remainder"
        " | prime | primes | factorial | sqrt | percent | percentage | ratio | altogether | in total"
        " | infinitely | irrational | inequality | converge* | bounded | logic | logical | logically | therefore"
        " | valid | argument valid | paradox | sequence | perimeter | radius | triangle | angle | dice | die"
        " | coins | coin | marbles | which is larger | which is bigger | which is greater | is larger | taller"
        " | shorter | shortest | tallest | older | younger | km h | mph | per hour | miles | minutes in"
        " | step by step | think it through | explain your reasoning | justify* | counterfeit | weighings"
        " | fraction | decimal | digit* | integer | reals | real numbers | graph is | planar | eulerian"
        " | recurrence | undecidable | halting problem | which of the following | winning strategy"
        " | backward induction | strong induction | rational | uniformly | random permutation | fixed points"
        " | owns | doesn t own | does not own | lives next to | clues | definitely | which weighs more"
        " | weighs | heavier | lighter | leap year | what time | time zone | how long will it take | compound interest"
        " | simple interest | average speed | brain teaser | lateral thinking | trick question | premise | premises"
        " | years old | left of | right of | sits | sit opposite | odds | chance of | heads | coin flips | flips"
        " | related to | relation to | grandmother | grandfather | uncle | aunt"
        " | cousin | nephew | niece",
        2.0: "compute* | sum | total | average | median | times | larger | smaller | greater | fewer | each | left"
        " | more than | less than | optimal | minimize | maximize | strategy | game | variance | distribution"
        " | random | cards | deck | balls | apples | circle | area | volume | speed | train | trains | hours"
        " | minutes | x | y | n | solutions | determine | odd | even | multiple | evaluate the | true or false"
        " | what day | how old | sale | price | earn* | pays | pay | split | bill | tip | sold"
        " | buy | bought | eggs | pages | friends | value | numbers | number | reasoning | think | deduction"
        " | derivation | rigorous | rigorously | statement | conclusion | conclude | implies | imply"
        " | contradiction | counterexample | pigeonhole | combinatorics | permutation* | combination*"
        " | arrange* | seated | knight | board | pirates | mother | father | sister | brother | son | daughter",
        1.0: "find | true | false | why",
    },
    TaskType.ANALYSIS: {
        5.0: "analyze* | analyse* | analysis | analyses | pros and cons | advantages and disadvantages"
        " | strengths and weaknesses | trade offs | tradeoffs | swot | root cause | literature review"
        " | summarize* | summarise* | summary | tl dr | tldr | key takeaways | main idea | sentiment",
        4.0: "compare* | comparison | contrast* | assess* | assessment | evaluate* | critique*"
        " | critically | interpret* | interpretation | insight* | trend* | takeaways | difference between"
        " | differences between | what is the difference | what's the difference | implications | benefits and"
        " | drawbacks | examine* | investigate* | review the | review this | main points | main themes | theme"
        " | themes | symbolism | bottleneck | methodology | stack trace | traceback | error message"
        " | what does this | what this code does | what does it mean | what do you think",
        3.0: "evaluation | explain* | explanation | identify* | classify* | categorize* | categorise* | tone | spam | versus"
        " | vs | data | dataset | metrics | kpi* | statistics | statistical | statistically | significant"
        " | significance | correlation | regression | causal | causation | survey* | segmentation | churn"
        " | conversion | conversions | revenue | sales | profitability | financial | liquidity | solvency"
        " | market | competitive | competitor* | landscape | risks | risk | vulnerabilit* | security | audit"
        " | incident | outage | logs | consequences | causes | factors | evidence | bias | confounders"
        " | limitations | research | historiography | legal | ethical | regulation* | regulatory | compliance"
        " | recommend* | extract* | figures | findings | hypotheses | hypothesis | impact | impacts | effects"
        " | role of | how does | why does | why do | why did | why is | what causes | what caused | overview"
        " | breakdown | similarities | differ | better deal | which is better | should we | positive or negative"
        " | build vs buy | build versus buy | study | cause | causes of | consistency models | guarantees"
        " | main point | point of | advantages of | disadvantages of | benefits of | drawbacks of | downsides"
        " | upsides | is it worth | better for | should i use | which should i | worth it | better than"
        " | should my | should i | feedback | complaints | complaint | customer reviews | top complaints"
        " | most common | read this | common themes | cut costs | where can i | significance of | importance of"
        " | history of | evolution of | overview of | breakdown of | rate this | what happens when | impact of",
        2.0: "review* | report | describe* | strengths | weaknesses | pros | cons | benefits | advantages"
        " | disadvantages | mean | means | meaning | article | essay | paragraph | text | argument | claim*"
        " | policy | decline | history | business | strategy | performance | latency | profile | consistency"
        " | architecture | main | key | likely | positive | negative | neutral | decide | deciding | decision"
        " | rank | prioritize | quantify | understand | clarify | tell me | what are | dates | plot | review"
        " | this email | this message | this review | this headline | this sentence | this argument"
        " | this clause | this contract | the following article | this study | pipeline | fraud",
        1.0: "why | how | what | table | numbers | plan | plans | deal | beginners | better | worse | tips | roadmap",
        1.5: "cost | costs | expenses | budget | spending | savings | invest* | portfolio | stock | stocks"
        " | economy | economic | diagnose | symptoms | advice | advise | debug*",
    },
    TaskType.COMPLETION: {
        -3.0: "in one sentence | in two sentences | in three sentences | in a sentence | in a few sentences",
        5.0: "autocomplete | fill in the blank* | fill in the missing | next word | finish the sentence"
        " | finish this sentence | complete the sentence | complete this sentence | finish my sentence"
        " | complete the phrase | finish the proverb | complete the quote | continue the list | next sentence"
        " | passive voice | active voice | spell check | spelling | correct the spelling | correct the grammar"
        " | best ending | the ending | ending 1 | which continuation | likely continuation",
        4.0: "blank* | continuation | translate* | translation | synonym* | antonym* | plural | fill in"
        " | rest of | most plausible | which ending | capital of | who wrote | who invented | who painted"
        " | what year | chemical symbol | proverb | complete the | finish the | continue the | continue this"
        " | continue writing | finish this | complete this | complete the following | finish these"
        " | complete the missing | complete the remaining | remaining sections | remaining clauses"
        " | remaining chapters | the remaining | from where it stops | completez | complete la | continuez",
        3.0: "sentence | phrase | idiom | spell | spelled | spells | grammar | rephrase | paraphrase | reword | missing"
        " | remaining"
        " | ending | plausible | into french | in french | to french | into spanish | in spanish | to spanish"
        " | into german | in german | to german | into italian | in italian | into japanese | in japanese"
        " | into chinese | in chinese | into english | in english | to english | define | definition | stand for | abbreviation | acronym"
        " | trivia | quote | predict the | word game | what comes next | closing paragraph | expand these notes"
        " | expand this | fill | completes | to its conclusion | this sentence | rewrite | rephrase this",
        2.0: "capital | who | when did | where is | how many legs | what is the | wrote | invented | discovered"
        " | symbol | fact | facts | dear | continue | finish | complete | completion | next | lyrics | notes"
        " | subject line | minutes | press release | faq | manual | past tense | tense | conjugate | pronounce"
        " | rhymes with | opposite of | meaning of | population of | boiling point | name the | when was | who was"
        " | who is | what is the name of | how tall | how far is",
        0.5: "what",
    },
    TaskType.CREATIVE: {
        5.0: "poem* | poetry | haiku* | limerick* | sonnet* | villanelle | sestina | ghazal | pantoum | acrostic"
        " | short story | screenplay | libretto | slogan* | tagline* | jingle | tongue twister | world building"
        " | worldbuilding | backstory | bedtime story | writing prompt | wp | poeme | poema | cuento",
        4.0: "story | stories | tale | fable | novel | novella | fiction | fictional | lyrics | song | rhyme*"
        " | rhyming | verse | joke* | pun* | catchy | brainstorm* | storyline | plot twist | opera | musical"
        " | stage play | three act | one act | toast | speech | blog post | tweet | caption | limericks"
        " | horror | sci fi | science fiction | fantasy | fairy tale | d d | rpg | role playing | epic"
        " | in the style of | creative | creatively | imaginative | invent* | make up | come up with"
        " | product description | marketing campaign | ad copy | greeting | birthday message | love letter"
        " | good morning text | histoire | chapter | linkedin post | instagram post | facebook post"
        " | social media post | announcing | announce | couplet | rhyming couplet | invitation | episode | episodes"
        " | tv series | tv show | sitcom | drama | cliffhanger* | season arc* | party theme | gift ideas | name ideas"
        " | ideas for | design a logo | logo | meme | instagram bio | elevator pitch | radio spot | video script"
        " | youtube script | fan fiction | fanfic | roleplay | role play | pretend | cover letter | apology letter"
        " | letter to | costume | commercial",
        3.0: "character* | protagonist | villain | hero | heroine | narrator* | dialogue | scene | plot | imagine"
        " | names | name for | title for | ideas | idea | describe a | vivid | funny | humorous | humor | satirical"
        " | satire | whimsical | persuasive | blog | campaign | marketing | advertisement | ad | ads | wedding"
        " | birthday | anniversary | card | dragon | wizard | mystery | thriller | romance | noir | detective"
        " | monologue | eulogy | manifesto | podcast | brand | mascot | motto | quote for | motivational"
        " | inspirational | cute | ballad | chorus | aria | duet | stanza* | iambic | hexameter | subplots"
        " | foreshadowing | epistolary | interactive fiction | endings | tabletop | magic system",
        1.0: "write",
        2.0: "compose* | craft | draft | create | email | message | announcement | launch | review | letter"
        " | pitch | recipe | menu | itinerary | bio"
        " | suggest | fun | emotional | sunset | moon | love | world | original",
    },
}

LEAD_TERMS: dict[TaskType, Table] = {
    TaskType.CODE_GENERATION: {2.0: "implement | code | program | script"},
    TaskType.CODE_REFACTOR: {2.0: "refactor | clean | tidy | simplify | optimize | rewrite | modernize | improve"},
    TaskType.REASONING: {3.0: "prove | solve | calculate | compute | derive | show | determine"},
    TaskType.ANALYSIS: {
        4.0: "analyze | analyse | compare | summarize | summarise | evaluate | assess | explain | review | critique"
        " | examine | investigate | interpret | identify | classify | extract | perform | conduct",
        1.0: "list",
    },
    TaskType.COMPLETION: {
        4.0: "complete | finish | continue | fill | autocomplete | translate | predict | completez | termina"
        " | completa | continua | expand",
    },
    TaskType.CREATIVE: {
        3.0: "compose | brainstorm | invent | imagine | craft | pen | draft",
        1.0: "write | create | make | give | tell | come | suggest | think",
    },
}

CODE_TERMS: dict[TaskType, Table] = {
    TaskType.CODE_REFACTOR: {
        6.0: "translate* | rewrite this",
        4.0: "to typescript | into typescript | to python | into python | to javascript | into javascript"
        " | to rust | into rust | to go | into go | to java | into java | to kotlin | to swift | to c++ | to c#",
        3.0: "make it | make this | improve* | simplify* | optimize* | optimise* | rewrite* | convert* | port"
        " | change* | use | replace* | remove* | reduce* | update* | turn | fix* | add type | clean | split"
        " | extract | rename | migrate* | restructure | faster | slow | safe | safely | thread safe"
        " | error handling | instead | generic | shorter | ugly | messy | review | nesting | nested"
        " | decorator | composition | hooks | logging | async await | ternary | one liner | early return"
        " | shorten | condense | cleaner",
        1.5: "add | move | better | performance | efficient | memory | leak | modern | style | format*"
        " | exception safe | concurrency",
    },
    TaskType.ANALYSIS: {
        3.0: "explain* | what does | what is this | why does | why is | understand | walk me through | tell me"
        " | mean | stack trace | complexity of"
    },
    TaskType.CODE_GENERATION: {
        2.0: "write tests | unit tests | add tests | test suite for | implement the | complete the"
    },
    # translating code is porting it, not translating text
    TaskType.COMPLETION: {-5.0: "translate*"},
}

#: Complexity: terms that mark a harder request (added to the score, before rounding).
HARD_TERMS: Table = {
    4.5: "prove* | proof*",
    3.5: "show that",
    3.0: "from scratch | production ready | production grade | production quality",
    2.5: "lock free | paxos | linearizable | linearizability | compiler | operating system | garbage collector"
    " | storage engine | crdt | crdts | undecidable | novella | screenplay | libretto | world building"
    " | literature review | historiography | god class | strangler | allocation free | grant proposal | sestina",
    2.0: "comprehensive | in depth | distributed | consensus | raft | leader election | concurrency | concurrent"
    " | rigorous | rigorously | theorem | lemma | if and only if | root cause | geopolitical | confounders"
    " | data leakage | distribution shift | total cost of ownership | iambic pentameter | hexameter"
    " | epic | sat solver | cdcl | double ratchet | end to end encrypted | b tree | write ahead | kernel"
    " | replication | sharding | failover | fault tolerant | simd | avx2 | cuda | full stack | state machine"
    " | exactly once | at least once | zero downtime | without downtime | exception safe | data race"
    " | deadlock | goroutine leak | hot path | hot loop | layered architecture | uncountable | diagonal argument"
    " | closed form | converges | inequality | recurrence | specification | rfc | white paper | research paper"
    " | design document | legal opinion | subplots | foreshadowing | epistolary | unreliable narrator",
    1.5: "thorough | thoroughly | critically | methodology | selection bias | statistical power | second order"
    " | systemic | policy options | case law | single points of failure | vulnerabilities | hypotheses"
    " | segmentation | causal | microservices | saga | cqrs | event sourced | event sourcing | idempotency"
    " | atomics | memory ordering | interpreter | crash recovery | high performance | scalable | scalability"
    " | multi producer | sub microsecond | order book | benchmark* | architecture | legacy | monolithic"
    " | incrementally | characterization tests | keyset pagination | n+1 | induction | backward induction"
    " | strong induction | poisson | decision tree | integer solutions | for all | for any | converge"
    " | nonlinear | subtext | perspectives | branching | interactive fiction | opera"
    " | brand identity | multi channel | fully developed | climactic | satirical | irony | distinct voice*"
    " | generations | consistent with | remaining sections | remaining chapters | remaining clauses"
    " | statistical analysis plan | arbitration | indemnification | investigative | capacity plan"
    " | rollout | migration plan | bit for bit | quadrangle | knuth | implications | long term"
    " | prioritize | prioritized | quantify | build vs buy | tco | gdpr | compliance | pci | exploit"
    " | security | vulnerability | trading system | matching engine | neural network | autodiff"
    " | automatic differentiation | webassembly | wasm | bvh | importance sampling | paging | interrupts",
    1.0: "novel | literary | chronological | imagery | counterexample | red flags | revenue recognition"
    " | detailed | in detail | optimize | optimization | performance | robust | edge cases | requirements"
    " | constraints | guarantee* | ensure | must | tests | test suite | integration tests | metrics"
    " | dependency injection | migrate | migration | upgrade | kubernetes | operator | encryption"
    " | cryptographic | idempotent | partitions | network | websocket | authentication | authorization"
    " | permissions | role based | rate limiting | pagination | persistence | snapshotting | evidence"
    " | justify | every step | derive | expected value | variance | omega | trade offs"
    " | evaluate | assess | critique | argue | recommend | recommendation | strategy | multiple"
    " | consistent | preserving | preserve"
    " | identical | identically | exactly the same | backwards compatible | sonnet | villanelle | cycle"
    " | timeline | magic system | campaign | scripts | act | acts | stage directions | thread safe"
    " | chapter"
    " | connection pool | health checks | survive | mechanics | balanced | game system | role playing game"
    " | ordered pairs | such that | positive integers | positive reals | a complete | complete implementation"
    " | deduction | convergence | diverge* | multiplayer | game server | game engine | physics | real time"
    " | improper integral | find all | determine all | find the number of | derivation | search engine | inverted index | incremental indexing | bm25 | design and implement | plugin system | sandboxing | hot reload | high throughput"
    " | backpressure | dependency resolution | arcs | season | strategic | short story | interchange | linear time | streaming | aho corasick"
    " | dynamic programming | traveling salesman | travelling salesman | np hard | approximation algorithm"
    " | suffix array | segment tree | max flow | shortest path* | knapsack | earnings manipulation",
    0.5: "should | handle | handles | efficient | optimal | scale | full | entire | system | design"
    " | explain why | why | analyze | analyse | compare | examine | investigate | class | methods"
    " | component | endpoint | cli | algorithm | binary search | lru | trie | paragraphs | letter"
    " | press release | manual | readme | product description | cover letter | recipe | minutes"
    " | lyrics | song | email | dialogue | toast | review | article | speech | essay | story"
    " | blog post | backstory | scene | opening scene",
}

#: Complexity: terms that mark an easy request (subtracted from the score).
EASY_TERMS: Table = {
    2.0: "hello world | trivial | synonym | antonym | plural | capital of | who wrote | fizzbuzz",
    1.5: "haiku | limerick | joke | jokes | pun | puns | slogan | tongue twister | tweet | tiny | one liner"
    " | one line | two sentence | one sentence | palindrome | factorial | even or | celsius | fahrenheit"
    " | reverse a string | next word | fill in the blank | simple | basic | quick | quickly | easy"
    " | good morning text | acrostic | chemical symbol | who invented | what year | how many legs",
    1.0: "brief | briefly | short | few | names | name for | title | caption | greeting"
    " | birthday message | proverb | translate | spell | define | three sentences | bullet points"
    " | fill in the missing | fill in the blanks | finish the sentence | complete the sentence | motivational"
    " | sentiment | spam | main idea | main point | one word | simple terms",
    0.5: "just | list | sum | reverse | extract | classify | identify | sentence | phrase | word | blank"
    " | is this | poem | ideas | quote | message | count | square | convert | add | max | min | maximum | minimum"
    " | lowercase"
    " | uppercase | print | prints | what is",
}
