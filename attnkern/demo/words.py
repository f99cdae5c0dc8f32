"""Built-in English word list for the demo (lowercase; letters and apostrophes).

About 6,000 words in frequency order: the most common English words, plus the more
frequent long ones (11+ letters) and common contractions, so that the model sees long words
and every letter. Derived once from the ``wordfreq`` package's English frequency list
(``top_n_list("en", 25000)``, roman numerals "ii", "iii", "iv" dropped); it is plain data
here so the demo needs nothing beyond torch.
"""

WORDS: tuple[str, ...] = tuple(
    """
the to and of a in i is for that you it on with this was be as are have at he not by but from my
or we an your all so his they me if one can will just like about up out what has when more do no
were who had their there her which time get been would she new people how some also them now
other its our than good only after first him into know see two make over think any then could
back these us want because go well said way most much very where even should may here need
really did right work year years being day too going before off why made still take got many
never those life say world down great through last while best such love man home long look
something use same used both every am come part state three around between always better find
help high little old since another does own things under during game thing give house place
school again next each mr without against end found must show big feel sure team ever family
keep might please put money free second someone away left number city days lot name night play
until company doing few let real called different having set thought done however getting god
government group looking public top women business care start system times week already anything
case nothing person today change enough everything full live making point read told yet bad four
hard mean once support tell including music power seen states stop water based believe call head
men national small took white came far job side though try went yes actually american later less
line order party run says service country open season shit thank children everyone general
trying united using area black following law makes together war whole car face five kind maybe
per president story working course games health hope important least means news within able book
early friends information local oh post thanks video young ago others social talk court fact
given guys half hand level mind often single become body coming control death food guy hours
office pay problem south true almost fuck history known large lost research room several started
taking university win wrong along anyone else girl john matter pretty remember air bit friend
hit needs nice playing probably saying understand yeah york class close comes idea international
looks past possible wanted cause due happy human members months move question series wait woman
ask community data late leave north saw special watch either fucking future light low million
morning police short stay taken age buy deal rather reason red report soon third turn whether
among check development form further heart minutes myself services yourself act although asked
child fire fun living major media phone players art behind building easy gonna market near non
plan political quite six talking west works according available education final former front
kids list ready sometimes son street bring college current example experience heard london meet
program type baby chance father march process song study word across action clear gave gets
himself month outside self students words board cost cut dr field held instead main moment
mother road seems thinking town wants de department energy fight fine force hear issue played
points price re rest results running shows space summer term wife america beautiful date goes
killed land miss project sex shot site strong account co especially eyes include june parents
period position record similar total above club common died film happened knew lead likely
military perfect personal security share st tv won april center county couple dead english
happen hold industry inside issues online player private problems return rights sense star test
view weeks break british companies event higher hour member middle needed present result sorry
takes training wish answer boy design finally girls gold gone guess interest july king learn
policy society added al alone average bank brought certain church east hands hot longer medical
movie original park performance press received role sent themselves tried worked worth areas
became bill books cool director exactly giving ground meeting provide questions relationship
september sound source usually value evidence follow lives official ok production rate reading
round save stand stuff tax whatever amount blue countries david drive eat fall fast federal
feeling felt green league management match model picture size step trust central changes england
forward groups hey key mom page paid range review science trade uk upon various attention
brother cannot character chief cup football hate james led looked lower natural october property
quality send style vote amazing august blood china complete dog economic hell involved itself
language lord november oil related serious stage terms title add article attack born damn
decided decision enjoy entire french january kill met perhaps poor release situation technology
turned website written choice code considered continue council cover currently door election
european events financial foreign hair increase legal lose michael pick race seem seven sign
simple simply staff super union walk washington bed began built career changed crazy daily
daughter december die difficult figure hospital knows loss modern ones paper parts popular
published safe starting systems version voice whose writing army australia earth forget goal
huge internet listen okay practice rules sea sir success towards waiting ways access base below
created deep followed la lol mark missing offer pass professional released risk schools sleep
table ten truth ball box build card cases dark district europe george india mine minister note
percent piece products recent seeing straight visit wall wanna wrote allowed boys culture etc
fans february gives growth included married officer pain paul places respect response river rock
shall speak specific standard tonight write album century charge cold create effect eight except
eye funny limited moving network peace provided recently required sales spent store student
tomorrow track via watching weight addition ahead allow anti association beat brown capital
chinese committee conference difference double expect gas island moved normal plans population
potential pressure radio russian station text treatment western ass beginning california
campaign certainly completely content credit cross described despite female focus hi husband ice
individual interesting join kept leading loved message miles nearly particular previous quickly
region reported section sort speed travel consider contact drop fair feet jesus kid link
positive sale throughout tour welcome absolutely additional beyond conditions earlier extra
forces immediately jobs leaving minute nature numbers quick sell significant studies unless
winning agree canada clean computer construction episode favorite income justice levels manager
movement photo posted safety san scene sold sounds spend statement sun teams ability announced
asking calling coach collection continued costs definitely designed expected friday gun happens
heavy includes knowledge particularly search subject train wide wow author centre claim dad
developed fear fit generally german global goals gotta hotel interested judge lady leader letter
lines material named nobody opportunity plus pre product regular secretary sister stories unit
workers annual anymore bar battle brain contract degree families features finished floor france
growing hurt image insurance majority meant opening opinion physical pro reach rule seriously
sports stupid successful active administration approach australian biggest cancer civil dance
defense direction independent master none reasons russia ship stock trump weekend wonder worst
africa awesome band beach cash clearly commercial compared effort ended fan fighting imagine
impact lack latest learning multiple older operation organization passed pictures protect secret
senior spring sunday telling wear activities address analysis anyway bought calls choose
christmas color commission competition details direct dream easily finish grand increased indian
literally luck marriage names necessary patients resources rich skin speaking supposed sweet
thus touch yesterday caught closed congress damage directly disease doctor doubt drink driving
established facebook feels fish gay germany glad greater grow largest machine notice overall
planning professor programs records reports shown sit trip associated basic captain carry cars
crime effective effects explain fully highly holding japan laws male mrs parties plant reality
smith spot texas winter worse advice agreement award block broken caused challenge characters
christian comment equipment eventually helped holy killing lived lots nation otherwise peter
prices primary purpose rates responsible shop showing sick teacher theory uses william agency
avoid camera catch cell coast comments drug economy environment executive foot hall mass meaning
mission nine officers operations politics pop produced ran saturday status therefore trial truly
weather activity app application claims coffee complex condition division evening flight freedom
google heat highest interview library located location murder obama offered putting queen
seconds showed sitting standing stars walking accept actual appear attempt broke channel
distance eating exchange fat fell finding glass learned losing mobile northern opened placed
powerful prior protection reached receive religious ride robert royal screen serve signed slow
species speech traffic tree types vs wearing whom wonderful agreed airport animals appears begin
benefits bottom cities demand engine everybody famous ideas investment keeping lie notes partner
plays raised runs sad solution songs sources southern square stopped structure thomas
traditional twice wind worry americans appeared becomes brand bus cent chicago count covered
critical digital forced fourth fresh lake mental mentioned missed mostly mouth owner photos
previously realize remain scale score separate smart starts surface throw tom totally twitter
views wedding acting actions african arms benefit budget click estate failed faith fashion
feature fund generation hearing hill jack larger louis metal mid paris profile pull push
returned rose seat seemed sexual target understanding village agent animal apply authority basis
becoming chris draw dude employees enter ex follows foundation gain http individuals japanese
leaders memory prime projects ring rise selling served silver soul spread supply waste weird
adult apparently artist chairman edition engineering grade happening healthy institute method
mike monday nations obviously option prison provides remains senate smaller somebody stone
strength users wild window winner arrived bag bet camp cast christ continues correct dangerous
ed extremely firm greatest handle improve indeed leaves movies negative prevent removed richard
spirit television till trouble usa videos advantage apart aware cat customers decide dinner
dollars eastern fifth function gift helping herself impossible influence items joe los marketing
mary materials nor produce progress proud require shooting shut standards tells thinks van wood
background birth bridge carried charles classes completed concept copy dear dogs drugs efforts
garden host housing inc israel journal labor leadership length lucky neither onto patient
possibly prove rare setting skills software thousands tough units ad alive apple balance
birthday bitch boss cards changing connection dress easier fellow florida horse knowing liked
magic managed map net owned request stick turns vehicle volume wake aid beauty believed billion
busy buying cells concerned conversation corner criminal cultural develop driver ends existing
farm file fix fly frank guide images investigation mexico operating paying presented raise
responsibility roll slightly suggest surprise technical thoughts treat unique variety violence
weapons yours youth appreciate bigger breaking discovered dont dry edge evil excited forever
funds helps henry injury iron lovely mad magazine martin models offers ordered parliament
prepared reference religion sites somewhere stated strategy teachers web wine accounts angeles
arm audience bay blog closer core democratic description dropped excellent exist figures forms
guard honest issued joined jones lee lies likes medicine mention mountain nuclear orders port
presence reaction reduce shoot sides solid spanish sport steps stress taste tea victory
afternoon assistant britain citizens classic clothes decisions electric emergency entered
entirely facts failure festival flat fuel harry hello houses ill initial introduced johnson kick
links mail massive matters pair picked pieces plane plenty prince proper providing quarter
regional scott session shape sky teaching toward transfer upper useful valley watched willing
windows zone accident advanced alternative anywhere articles awards bear boat bringing capacity
cheap climate communities discussion drinking duty fantastic feelings flying governor hundred
industrial joint mix museum options path plants policies promise proposed purchase rain remove
signs spending steel steve supporting terrible tired treated turning vice warm afraid arts beer
border canadian command crew crowd dating dick elements enemy ensure environmental filled fixed
forest intelligence intended labour limit moon ocean powers profit proof republican soldiers
suit wins appearance asian attorney banks behavior ben bodies brothers buildings chair creating
debt domestic expensive grew historical homes honestly honor im jump launch listed minimum
native noted originally planned pm ray sets suddenly supreme survey tech trees update user
writer yellow younger ancient attacks charges combined communication connected contains download
email ending exercise express flow formed girlfriend hero illegal increasing joke loan methods
officials performed planet relationships restaurant scotland selected shared shopping soft stuck
sugar suggested supported surprised taught transport accepted adding affairs allows appeal
applied appropriate artists boston ca confirmed device drama entry era factor feed golden grant
grown heads hoping keeps lawyer legs lying measures mistake ms muslim organizations platform
pool pulled regarding relations requires route saved schedule scientific shoes smoke squad teach
testing tests values walked williams ya abuse angry businesses candidate comfortable concern
developing discuss elections emotional et everywhere facilities falling fox guns hole holiday
interests internal ireland italian italy jersey laugh leg letters liberal listening ll loves
lunch max milk pack payment perform recorded relatively sector sharing snow storm streets strike
studio sub weak youtube actor advance apartment asia chain chapter committed confidence cook
cute equal fake finance focused hits identity journey kitchen korea leads maintain measure mm
numerous owners posts properties quiet revealed specifically split task taxes taylor twenty
urban acts affected aircraft applications approved approximately argument arrested claimed
conflict considering corporate debate determined distribution documents escape extended factors
faster fault fill films flowers friendly ladies lay lights millions mixed phase properly pure
reduced requirements residents revenue sam sat secure smile strange talent temperature thousand
tony troops truck votes ah authorities basically besides bird blame bob bowl causes chicken
collected context coverage determine display dying elected examples experienced falls false
fired forgot funding identified incredible inspired launched ma meat ministry mode neck noticed
novel obvious passing positions remaining scored shirt shots slowly stadium stores surgery
trading tuesday vision whenever worried zero alex allowing begins champion charged cream crisis
daniel delivered editor estimated eu giant iran jail jim kingdom literature mayor minor moments
opposite orange ourselves pages remained selection serving signal stream struggle suicide talked
theme thursday tiny typically un unfortunately usual vehicles virginia voted voting walls wave
alcohol assembly breakfast bright brings capable carrying chosen combination conservative
customer cutting desire destroyed draft drunk essential fail familiar finds granted guilty
humans hundreds id improved jewish largely laughing markets medium ohio opportunities papers
perfectly recommend referred relevant seek sending solo spoke stands talks ticket unable upset
wing answers birds bomb creative cycle dealing directed don educational entertainment extreme
facility fields goods hang holds info mainly maximum newspaper offering painting republic
reserve returns row salt scared scottish shares statistics switch territory threat tickets wales
adults affect appointed armed aside assistance bell blow bond boyfriend careful circumstances
communications concerns controlled corporation cry danger deals delivery deserve devices dollar
dreams empty enjoyed explained faces folks fucked gender instance kim kinda matches mile motion
moves nick pacific prize realized reasonable receiving register resolution rural ryan saving
sees singing spain tools typical universe warning wars wednesday admit attitude branch brazil
conducted decades dedicated definition drawing favor flag frame guest ha heaven independence
institutions jackson kiss load plot possibility random recovery rent replace represent reviews
scenes seeking senator sentence teeth tips trained understood academic academy accurate achieve
adam afford andrew assume bbc bottle bunch category chat cheese chemical clinton competitive
detail diet em favourite fruit harder index item lane mess navy normally occurred opposition
parent permanent personally pleasure prefer programme representative scheme shift stood storage
tank tend tight transportation ultimately unlike weekly yard anybody assets basketball button
candidates combat constitution consumer counter creation crown crying dc defined depending
depression describe drivers el employment exclusive excuse expert frequently golf grace
hopefully identify importance kevin laid latter manufacturing mining object partners pattern
performing personnel perspective pregnant premier promote revolution rooms severe sleeping
suppose tool tournament turkey ve victim victims agents amazon arrest attend ban brilliant
carbon catholic chose circle concert crash declared deliver depth deputy dirty doctors earned
electronic error existence experiences expression factory headed interior joy jr legislation
maintenance manner mate matt nearby noise origin pakistan panel personality plate practices
prepare relief replaced resistance retail rice roads roof shame ships somewhat staying stronger
surely tip updated writers absolute advertising agencies baseball bathroom bible cable calm
championship checked client constant da dates degrees democrats doors driven dumb empire
exciting expansion heavily hide incident irish linked manage messages michigan multi nfl
politicians print quit refused reporting sight significantly sing soviet weapon wet widely
worldwide ages anniversary attractive bike broad burn cake causing closely constantly contest
deaths depends drawn fees francisco haha hardly hat height hidden hong invited letting loud
manchester marine motor officially pc peak portion pounds princess protein puts raw reform
regions represented respond retirement sample seats secondary solar somehow stayed suffering
sydney tries ultimate unknown wilson wondering attached attacked automatically balls battery
bills blind breath brief carolina chest conduct debut decade destroy differences edward engaged
experts expressed external fantasy ft grab hollywood immediate introduction joseph license paint
pilot pink presidential principal recognize recognized registered regularly representatives
rising seasons shipping singer smoking steam suffered survive tall thats theatre therapy witness
adopted aim campus cap chances childhood clinical clubs comedy commander comparison covers dan
defeat defence democracy detailed entitled exact exposed fed fee injured jan jordan kinds lets
loans lock musical nose objects opposed organized plastic protected purposes quote recording
semi statements suspect swear techniques tie tim trend valuable wealth wise yards aged approval
aspects attempts bread burning champions contain convention dancing document eggs employee en
engineer equivalent facing fairly fingers ford founded functions gang graduate greek hanging
inner islands le lift marked memories miller monthly mountains neighborhood operate outstanding
permission porn racing recommended regulations reply republicans rid roman scientists shoulder
shower solutions sons stations stephen tower tradition visited visual wheel zealand achieved
admitted appointment authors barely bc bush cabinet celebrate challenges chocolate coal colour
contemporary criticism davis dna effectively eric extensive faced filed formation fought gained
gallery highway historic hunt improvement inch initially junior jury kong korean marks monster
obtained olympic philosophy pride promised repeat returning riding rough santa settlement smell
sought speaker studied suggests surrounding tone topic toronto universal vast visitors wanting
auto consistent continuing earn exists finger grey guitar heading howard ignore involving latin
lewis meal meanwhile meetings naturally necessarily offices pants partnership payments
percentage pocket practical primarily proved rape regardless relative represents rescue
resulting rush sarah sessions sharp simon soccer stable structures supplies symptoms temporary
tested trick attended audio bone brian bullshit chamber chart circuit clothing complicated
confused consequences defend divided elizabeth everyday extent fishing format gap gate gotten
harm healthcare household immigration impressive jews joining killer lesson limits loving ltd
managers membership miami mirror mount nights occur parking proposal province purchased
recognition reputation rolling shortly situations strongly tears technique thin tied accused
adventure argue assessment atmosphere awful bedroom belief bound breaks carefully cats ceo
choices closing cloud colorado colors contrast courses courts donald drew egg element elsewhere
establish extension files founder gear georgia hills hip hitting increases infrastructure jason
locations loose machines moral offensive pa package pointed poverty processes processing
qualified railway reaching ridiculous sensitive server shock silence soldier superior supporters
thick threw tons transition violent voters wash acid actress administrative alan alongside angel
anxiety babies bars bonus castle charity clients compare contained cooking covering curious
directors discovery discussed duke egypt encourage enforcement featuring finals flash formal
formula fort governments gray gross horses hungry informed innocent jeff losses luke mac math
minds mistakes mystery networks olympics palace passes penalty pet phones photography producing
protest publication rating refer respectively rome scheduled select silent spoken successfully
suffer temple tracks trail uncle unusual waters woods yo arrival asks assault awareness badly
bath captured chase components concrete dave deeply expectations explanation exposure featured
fiction guarantee happiness harris hearts horrible ideal illinois injuries islamic jimmy kelly
legend lieutenant mini mood muscle muslims passion picking pleased procedure producer pushing
rank replacement retired roles sand savings settled shadow singles tag tape thread victoria
visiting wage wings andy avenue bags beating believes blocks boring charlie checking clock
commissioner commitment confident containing copies crimes custom denied desk drinks ear
electricity episodes farmers fbi grounds gym helpful horror iphone iraq label liverpool locked
naked ny opens output persons pitch pizza plain pushed raising rear reveal romantic scores
sisters speaks stages strategic swimming welfare winners wire worker afterwards alright android
anger architecture assist attempted behalf belt capture centers ceremony comic cops cuts dallas
designer diamond disappointed dressed economics efficient electrical employed enjoying entering
essentially establishment expecting explains flower ghost guests handed hockey houston https
hunting industries islam jane judges kit lab languages maps min morgan moscow na nervous newly
odd op ordinary participate philadelphia prayer principles racist rarely references sexy skill
soil solve stomach struck studying suck supports trash ugly vegas virus walker whoever amounts
anthony arthur aspect banned boost bureau colonel comfort controls cousin crack deck demands
dies dragon dramatic dust dutch engineers evolution foods hired illness inspiration institution
kings knife lately lowest memorial mexican minority mum opinions patterns presents priority
promotion rail readers remote repair root saint steal stolen telephone tho titles trans ups vol
whereas abandoned acquired actors alexander alliance annoying ap bid bro buddy buried butter
cares columbia conclusion confirm congratulations contracts convinced crap crystal dean decent
decline delay describes desert downtown elite enemies forgotten forth gods hire hop hopes insane
installed israeli landing layer managing marry nah nowhere nurse obtain organic ownership
participants pennsylvania poetry pot pray printed recall rugby sake sheet signing smooth
spiritual stops string sudden sweden syria throwing thrown vacation abroad arab assigned
associate assumed atlantic bench bother broadcast bye cambridge citizen cleaning compete
consists consumers contributed cricket critics damaged disaster discover disney entrance equally
fallen figured fitness francis friendship gary handling idiot intense keys lawyers lifetime
liquid makeup medal mortgage narrative narrow nba observed occasionally pan physics posting
potentially reduction reflect refuse researchers resource roger ross sciences seattle serves
shell silly subsequent towns translation visible yep adds allen amendment angle arizona arrive
belong berlin bishop channels clark commonly connect defensive designs efficiency enterprise
experiment feb females findings firms forum gifts grass hence increasingly incredibly jay
journalist kicked lessons lists maintained mill mo occasion oxford pace passenger pen pope
possession pp races rapid regulation resident rocks shaped sixth spin styles subjects sucks
suitable thirty valid vital whilst agriculture alleged anna atlanta bands christians collect
commerce cop creek currency emotions exhibition fraud funeral genuine gordon honey honour hook
hunter immigrants improving instructions introduce kansas km lands legacy log matthew merely
monitor nov patrick phil prisoners programming publishing ratio regret rejected remind resort
resulted reverse routine scary seed settle sin spell summary survival sword tongue ward waves
wayne achievement anderson argued asleep austin automatic begun behaviour cd cents coat
comprehensive consent daddy destruction diego diseases divorce doc drove ears engage
extraordinary fate frequency gaming gene glory headquarters heritage initiative interviews jean
juice landscape logic meets melbourne microsoft objective organisation privacy procedures
profits reducing regard representing residence roughly salary scoring script searching sections
strip surrounded threatened transferred tube universities walter wisconsin writes ambassador ann
apps awarded banking breast cant carter chelsea chemistry concluded consumption corruption
cotton crossed detroit discount dozen engines epic exception exit expand fancy gorgeous grateful
heroes holes impression inches indicate input johnny josh knock leather lips luxury lyrics
manufacturers masters movements oct operated ought outcome painted poll preferred pulling ranked
referring removal rep reporter rio risks rob screaming sept sequence singapore stretch tear
tennis terrorist theater ties twelve versions virgin voices wishes wolf absence agricultural
asshole ate athletes bears blues boxes bruce bull cameras commonwealth contribute contribution
contributions couples delicious deny deserves ease extend fame flood generated genetic glasses
impressed indicated instant investors involves kate kills liberty maria ministers monitoring
occurs passengers photographs principle producers progressive punishment rally rapidly reader
representation restaurants reveals roots samples shops sum swing tail texts twin upcoming
veterans alert arena arguments aug billy boom boots brave claiming column commit compensation
composition computers conservation constitutional crossing defending density di difficulty
dropping drops elementary ethnic expenses fleet foster fuckin fundamental gen genius greatly
guidance hospitals infection instagram intention iowa jokes knee mechanical nigeria parks
participation periods precious pregnancy premium preparing pretend priest prominent proven
radical remembered requested residential reward rings robin russell satellite shake shore spots
stats struggling substantial teen temperatures transmission trap uniform wildlife wooden ads
aggressive anne answered apparent bang blast bones brands centuries communist complaint
component connections courage cure del desperate diversity duties encouraged eve faculty
feedback fighter frozen guards hiding humanity ian il innovation instruments invest jacket
justin legislative listing manual mothers murdered nursing occupied ongoing operator painful
pound preparation punch purple railroad registration releases rick romance submitted sufficient
survived suspended technologies tissue trailer trends trials ukraine underground versus virtual
walks wounded ali amongst announcement arranged arsenal attending attracted biological bite
blocked boards burned categories checks chip concerning dare database define discrimination
disorder distributed districts documentary domain dynamic edited engagement explore favour fewer
footage giants grave hamilton implementation indiana investigate jazz jon jonathan laboratory
lawrence lincoln literary mask massachusetts midnight minnesota mouse oscar packed piano praise
presentation psychology relation restrictions rocket ruin saudi sean sec secrets slave stability
steady stones symbol terminal toilet treaty triple unlikely updates vietnam viewed affair agenda
bat bow calendar cape collective conversations cooperation craft darkness deeper devil edit
enable equity estimates failing finishing fortune gates goodbye graham hardware hillary hurts
intellectual invite involvement kentucky madrid mi nuts oregon partly petition phrase physically
protecting racial rated regime rivers rounds ruled sa sauce seal separated shield similarly
slide stem summit talented throat tiger touched toy visits warriors wisdom accounting alien
attacking awkward beast beef candy carrier celebration celebrity certificate cited clay coaching
colleagues constructed dated dec default delhi derived dialogue disabled distinct drag educated
eligible estimate execution existed fifty followers fool framework franchise funded furniture
generations guaranteed integrated intelligent interaction jet journalists lifestyle lighting
lisa loop mall mp overseas performances philippines polish recommendations recover regarded
relax reliable rely remarkable responses ruling sacrifice se sole stopping strategies succeed
tables tale targets timing ton volunteers witnesses wore worship worthy acted alarm bass bloody
breathing butt characteristics cnn collaboration con consideration counts creates crucial
daughters dependent discussions drives dual edinburgh equipped expanded experimental feeding
filter galaxy globe grades greece gulf highlights hoped intent involve judgment kennedy knight
larry las lmao logo malaysia mature moore nazi netherlands odds peaceful philip photographer pin
prevention printing promoting publicly pump repeated replied requests revenge satisfied seeds
signals slip spaces spare specialist stocks stranger submit surprising tap thompson threats
tourism turkish volunteer acceptable allies attempting auction bonds challenging chaos churches
cleveland cm composed concentration copper corp corps counting credits dawn dispute earnings
editing executed firing fits frequent gardens gathered hilarious huh ignored improvements
investments isis margin mars maryland mechanism moderate murray oklahoma opera overcome parallel
passage pit psychological publications quest radiation shocked sized stroke stunning tanks tokyo
topics trains traveling treating tune utility vessel weed wherever acquisition addressed alabama
alice angels anime announce autumn backed barry bold borders breathe cameron choosing classical
classified clip coaches coins concepts conspiracy controversy convince cooper disappeared eh
encounter equality exam examination fails federation fi fiscal guardian hd homeless instrument
intervention jerry lover mainstream menu missouri mounted mutual nope occasions offense oral
panic pays peoples pursue realise refugees removing requirement responded rip ruined scope
segment spectrum stays ted terror uh va venture virtually waited warren worn yea ac accompanied
adams aids aimed alpha approaches arguing arrangement beliefs boats boundaries brick brooklyn
colleges considerable conventional danny des designated dvd emperor employers enormous errors
focusing forgive gains garage gathering guidelines handled hosted indians indonesia inquiry
inspector jumped khan li lion loaded lonely maintaining measured mercy nevertheless newspapers
outer oxygen pipe pissed poem powder powered promises quotes racism ratings reads recovered
refers roy rude screw seventh shelter signature sooner spider stewart strikes suggesting suits
toys tracking tribute trigger vary venue wages wells wheels ye abc abortion accuracy albert
applying artificial belongs beneath bitcoin bullet burns carl celebrated consistently conversion
copyright counties democrat deposit destination dirt diverse divine emails er exclusively export
fastest formerly functional gather grandfather habit harvard indicates isolated jealous knocked
landed laughed laura lazy mama marshall mitchell modified municipal naval neighbors nelson
neutral noble oldest pat picks poland popularity professionals pussy reactions relate robot
sacred securities shoe speakers springs spy steven suggestions supplied susan suspension
terrorism terry toxic treasury tunnel unions upgrade warrant wider wound aaron actively
afghanistan ai applies arrangements asset assuming backing baker barcelona blessed brazilian
brush burden campbell carries casual certified charter chef civilian coalition cock complain
complaints controversial denver describing differently directions discipline discussing
disgusting dj dominant earning emma essay expense explaining furthermore graphic greg healing
hiring hosts implemented instantly invasion jacob jumping laptop legendary leo maker margaret
mario opponents outdoor palm parker photograph pole pub quarters queensland rangers ranks
reception recipe regulatory reviewed rolls rubber secured serial settings shed snake sponsored
stealing strict subsequently substance suggestion switzerland syndrome tasks trips ultra
unexpected usage utah worlds accidentally affordable amateur appeals argentina baltimore batman
bearing beats bin biology bobby briefly canal cancelled charlotte cheaper christopher climb com
competing completion cruise custody delete demonstrated departure developers developments dig
eagles employer evans explosion fever fluid folk generate gop handsome ho holidays hotels
imagination integration integrity interpretation leaf legitimate lightning loads longest magical
mills motivation nasty oliver outfit pension permit perry plates pleasant portrait productive
reminds reserves ron safely shirts shorter slight socialist streaming sue targeted tension
thailand theories touching transactions twist ugh unemployment unity useless viewers winds woke
wtf abilities advocate aims arc backup beaten bitter blown branches campaigns chips cia clever
clinic closest collections continuous converted correctly creator creatures criteria declined
detective difficulties disability dish douglas du duck egyptian ep evaluation excess farming
fence fifa fighters flights forcing forming franklin fred gradually gravity habits hawaii
highlight holder hood hung identical imperial investigations jose ken legally lied listened
males manufacturer meters nail nasa negotiations nonsense ontario operational orleans owns
phoenix playoffs poet quoted relating repeatedly robinson rolled scientist sink skip slavery
snap sorts souls stole swedish swim swiss transaction transformation additionally communicate
demonstrate departments distinguished experiments incorporated christianity congressional
electronics exploration mississippi participating populations practically sustainable
threatening uncomfortable acknowledge classification consecutive identification metropolitan
parliamentary proceedings significance unnecessary approaching celebrating controlling
corporations illustrated revolutionary simultaneously surveillance appreciated determination
installation interactions introducing legislature organisations preliminary satisfaction
accomplished embarrassing mathematics productivity responsibilities scholarship conservatives
encouraging grandmother ingredients instruction investigated statistical availability
consciousness corresponding fascinating manufactured observation understands appreciation
complaining unfortunate capabilities competitors connecticut entertaining establishing
palestinian possibilities restoration citizenship declaration distinction implications
jurisdiction technically appearances importantly influential recommendation surprisingly
acknowledged allegations anticipated celebrities confirmation contributing historically
investigating overwhelming permanently transformed unbelievable administrator concentrate
consequence inhabitants specialized accommodation achievements demonstration encountered
independently interactive politically prosecution spectacular subscription technological
temporarily traditionally effectiveness embarrassed exceptional limitations measurement
measurements orientation sophisticated alternatives emotionally experiencing intermediate
magnificent mathematical nonetheless questioning thanksgiving championships conferences
dimensional identifying uncertainty accommodate accordingly associations broadcasting
consultation continental convenience deliberately disappointing environments flexibility
functioning initiatives observations probability resignation territories characterized
civilization contractors disappointment participated preservation theoretical transparent
conclusions considerably distinctive enterprises institutional interviewed prescription
recruitment shakespeare subscribers westminster consistency entrepreneur expectation
inappropriate instrumental interference mediterranean obligations rehabilitation speculation
complications desperately financially manufacture certification characteristic configuration
continuously determining fortunately foundations frustrating frustration superintendent
administered architectural circulation coincidence commissioned concentrated reconstruction
substantially accessories appointments assumptions businessman documentation dramatically
internationally philosophical quarterback reservation sensitivity specifications consequently
neighbourhood playstation predictions remembering shareholders supervision unconscious
battlefield conjunction disabilities elimination merchandise neighborhoods beautifully
countryside demographic descriptions expressions illustration interpreted notification
productions reliability accountability continually coordinator humanitarian implementing
nationalist recreational settlements territorial transgender accountable attractions
confidential coordination entrepreneurs hospitality individually personalities pharmaceutical
progression specialists trafficking transparency conditioning destructive highlighted
imprisonment perspectives supernatural assignments credibility grandparents intersection
investigators overwhelmed preferences qualification qualifications transported undoubtedly
calculations distinguish extensively forgiveness illustrations minneapolis neighboring
preparations problematic promotional prospective psychiatric renaissance transmitted
unacceptable congressman cooperative correlation correspondent demonstrates prestigious
sovereignty accompanying accusations administrators brotherhood celebrations compilation
correspondence devastating geographical governmental incorporate interrupted manipulation
proposition therapeutic undergraduate advertisement atmospheric enthusiastic establishments
exploitation tournaments breakthrough combinations competitions destinations differential
economically investigator justification nationalism organizational photographers straightforward
telecommunications adjustments assassination bibliography collectively commercials commissions
compression congregation consolidated coordinates definitions discovering evolutionary
indianapolis intentionally marketplace methodology modifications nominations partnerships
predecessor strengthening unprecedented willingness advancement alternatively fundraising
masterpiece possessions respiratory southampton sympathetic constraints inheritance
practitioners predominantly psychologist reproductive sufficiently assessments backgrounds
commitments comparisons coordinated efficiently eliminating encouragement grandchildren
inconsistent kindergarten northwestern reproduction reservations similarities springfield
surroundings collaborative compromised constructive conventions demonstrations developmental
distraction installations lightweight negotiating negotiation participant questionable
respondents supermarket certificates commissioners communicating comparative embarrassment
fundamentally ideological insufficient modification neighbouring prohibition recognizing
supplements sustainability theological billionaire calculation cancellation concentrations
decorations demonstrating designation explanations medications photographic predictable
professionally restriction resurrection scholarships accelerated accomplishments advertisements
counterparts disciplinary eligibility endorsement forthcoming inspirational palestinians
specification unreasonable antibiotics anticipation appropriately authorization comfortably
considerations consultants contributes credentials disappearance exceptionally expenditure
frequencies homosexuality interventions transferring understandable acceleration commodities
constituents discoveries inflammation innovations millionaire positioning quantitative
termination unsuccessful arbitration cholesterol confrontation constitutes contributor
helicopters inflammatory intentional laboratories nationality occupational persecution
philosopher photographed prostitution radioactive realization reconciliation sponsorship
translations undertaking voluntarily commentators consolidation continuation convictions
descendants disadvantage impressions instability municipality observatory penetration
projections respectable spontaneous submissions unexpectedly accumulated announcements
confederate contaminated contamination counterpart dissertation downloading functionality
meaningless misunderstanding psychiatrist resolutions stimulation verification vulnerability
accomplishment acquisitions butterflies constituency corrections disciplines inconvenience
incorporating smartphones strengthened underestimate archaeological cardiovascular compliments
controllers exaggerated exhibitions girlfriends investigative overlooking perceptions
procurement stereotypes suppression terminology unpredictable astonishing commentator
commercially contributors enlightenment friendships frightening highlighting irresponsible
johannesburg proprietary protagonist reflections representations statistically susceptible
aspirations circumstance disagreement distributor genetically ineffective interacting
notifications optimization pornography proportions provisional southeastern storytelling
acknowledging anthropology concessions contracting drastically fashionable incompetent
indefinitely legislators manuscripts transforming unconstitutional approximate compartment
compositions conditioned contestants derivatives dictatorship disrespectful entertained
multiplayer municipalities northeastern nutritional precipitation prosecutors protections
southwestern spokesperson standardized theoretically transitional affiliation aggressively
australians autobiography broadcaster conflicting cultivation discontinued displacement
enhancement firefighters illustrates inspections interpretations practitioner researching
shareholder subdivision surrendered unavailable universally volunteered campaigning
computational differentiate discouraged earthquakes heavyweight interviewing missionaries
philosophers rectangular restructuring unanimously dissolution disturbance evangelical
examinations hypothetical informative infringement jacksonville misunderstood motherfucker
premiership presentations proliferation refrigerator regeneration remembrance reminiscent
unidentified authenticity breathtaking degradation disappearing distributors equilibrium
granddaughter indications intercourse interestingly jurisdictions manipulated presbyterian
proportional segregation testosterone ventilation accumulation authoritarian chamberlain
compatibility conditional congratulate constructing coordinating fundamentals impeachment
kickstarter periodically precautions predecessors resemblance superiority transitions
transmitter transporting vaccination advertisers catastrophic condolences constituent
constituted conveniently distributing electromagnetic installment subsidiaries tuberculosis
affirmative archaeology calculating comprehension criticizing deportation entrepreneurship
handwriting heartbreaking inauguration incorrectly inexpensive instructors libertarian
satisfactory supervisors technicians transformers unauthorized businessmen catastrophe
chemotherapy circulating complementary connectivity demographics emergencies enthusiasts
implication interrogation intimidating liabilities multinational nationalists overlapping
psychologists revelations schizophrenia seriousness stakeholders superficial acquaintance
ambassadors bureaucracy compassionate concentrating convertible desperation detrimental
entitlement humiliation incorporates ministerial obstruction prostitutes recommending
retaliation spirituality wonderfully accreditation aforementioned alterations clarification
consolation corresponds descriptive empowerment inscription interpreter neurological
overwhelmingly physiological restrictive stimulating strawberries transcription unrealistic
whereabouts acknowledges adolescents characterization communicated confessions experimenting
insignificant intercepted interfering knowledgeable magistrates personalized professions
reformation replacements screenshots semiconductor sentimental simultaneous slaughtered
condemnation contemplating disconnected dysfunction encyclopedia expenditures integrating
restricting sensational systematically volunteering accessibility collaborate comparatively
compensated councillors disciplined discriminate distributions incidentally instructional
interviewer introductory millennials persistence pronunciation ridiculously simulations
specializing speculative trustworthy albuquerque alternating breastfeeding consciously
illuminated inexperienced influencing picturesque profitability progressing secretaries
specializes utilization astronomical automobiles choreography commemorate differentiation
disadvantaged disadvantages ecclesiastical enlightened fingerprint gravitational intellectuals
interchange motorcycles northampton scandinavian subscriptions supplemental translating
unconditional unforgettable accommodations adventurous blockbuster broadcasters charismatic
commencement confiscated contradictory disposition documentaries engagements fabrication
facilitated fascination formulation incompatible motivational notwithstanding originating
pharmaceuticals progressively reinforcements restraining retrospective righteousness terrestrial
unstoppable accountants apprenticeship biodiversity centralized consolidate containment
dangerously establishes existential experimentation fluctuations forecasting inconvenient
irresistible respectfully substituted accelerating brilliantly confinement confronting
consultancy contraction contrasting convergence discriminatory globalization groundbreaking
humiliating illustrator inefficient instrumentation intensified intolerance masturbation
plantations registering subcommittee beneficiaries competitiveness confederation confidentiality
configurations contradiction counselling distractions entertainer festivities footballers
imaginative insensitive interpreting manipulating neuroscience programmers qualitative
recognizable reconnaissance reluctantly saskatchewan scientifically secretariat shortcomings
specialised strategically subordinate artificially billionaires contingency deprivation
disqualified diversified documenting environmentally everlasting feasibility fulfillment
groundwater hospitalized hostilities inadvertently indifferent intimidated occupations
pedestrians preparatory it's don't i'm you're that's can't i've didn't he's there's doesn't
they're i'll isn't we're i'd won't wasn't she's you'll what's wouldn't let's you've haven't
couldn't aren't we've here's we'll ain't who's you'd shouldn't they've hasn't they'll women's
people's weren't world's it'll he'd he'll today's children's men's we'd hadn't one's they'd
year's god's mother's would've man's someone's company's everyone's father's city's
""".split()
)
